// GET /metrics on the gateway's HTTP port: Prometheus text, for the admin only (the counts name users).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Log } from './log.js';
import type { GatewayMetrics } from './metrics.js';
import type { SnapshotStore } from './snapshotStore.js';

export const METRICS_PATH = '/metrics';

export function serveMetrics(
  req: IncomingMessage,
  res: ServerResponse,
  metrics: GatewayMetrics,
  users: SnapshotStore,
  log: Log,
): void {
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  const refuse = (status: number, text: string): void => {
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...(status === 401 ? { 'WWW-Authenticate': 'Bearer' } : {}) });
    res.end(`kernelhop gateway: ${text}\n`);
  };
  if (bearer === null) {
    refuse(401, 'GET /metrics needs "Authorization: Bearer ADMIN_TOKEN" (the token is in DATA/admin-token)');
    return;
  }
  users
    .authenticate(bearer[1])
    .then(async (user) => {
      if (user === undefined) return refuse(401, 'wrong token');
      if (!user.admin) return refuse(403, `user ${user.name} is not the admin; /metrics names every user`);
      const text = await metrics.text();
      res.writeHead(200, { 'Content-Type': metrics.contentType });
      res.end(text);
    })
    .catch((e: unknown) => {
      log(`/metrics failed: ${String(e)}`);
      refuse(500, 'could not collect the metrics');
    });
}
