// Wires the stores, the scheduler and both APIs into one gateway; writes <data>/gateway.json for discovery.
import { randomBytes, randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { BlobStore } from './blobStore.js';
import { DEFAULT_ADMIN_USER, DEFAULT_LIVENESS_S, DEFAULT_WARM_GRACE_S, ElasticConfig, GatewayConfig } from './config.js';
import { Autoscaler } from './elastic/autoscaler.js';
import { CommandProvider } from './elastic/commandProvider.js';
import { KubernetesProvider } from './elastic/kubernetesProvider.js';
import { RuntimeProvider } from './elastic/provider.js';
import { Collector, Mutex } from './gc.js';
import { GrpcApi } from './grpcApi.js';
import { Log, jsonLog } from './log.js';
import { GatewayMetrics } from './metrics.js';
import { METRICS_PATH, serveMetrics } from './metricsHttp.js';
import { MetadataStore } from './metadataStore.js';
import { RuntimeTokenStore } from './runtimeTokens.js';
import { Liveness } from './runs/liveness.js';
import { PoolOps } from './runs/poolOps.js';
import { RunService } from './runs/runService.js';
import { Scheduler } from './scheduler.js';
import { SnapshotApi } from './snapshotApi.js';
import { SnapshotStore } from './snapshotStore.js';
import { UsageLedger } from './usage.js';
import { HubIdentity } from './hubIdentity.js';
import { loadServerTls } from './tls.js';
import { openStores } from './stores/openStores.js';
import { BLOB_UPLOAD_PATH, WS_PATH, WsApi } from './wsApi.js';

/** Where a runtime that has the WebSocket URL asks for the gRPC port. */
export const RUNTIMES_INFO_PATH = '/runtimes/v1';

export interface GatewayTuning {
  heartbeatIntervalMs?: number;
  missedHeartbeats?: number;
  cancelGraceMs?: number;
  pingIntervalMs?: number;
  log?: Log;
  /** Replaces the provider --provider names (tests: runtimes in this process). */
  provider?: RuntimeProvider;
  autoscaleTickMs?: number;
}

export interface Gateway {
  wsUrl: string;
  grpcAddress: string;
  /** SHA-256 of the server certificate when TLS is on: what a client may pin instead of trusting a CA file. */
  tlsFingerprint?: string;
  store: BlobStore;
  metadata: MetadataStore;
  snapshots: SnapshotStore;
  collector: Collector;
  scheduler: Scheduler;
  runs: RunService;
  runtimeTokens: RuntimeTokenStore;
  usage: UsageLedger;
  metrics: GatewayMetrics;
  close(): Promise<void>;
}

export async function startGateway(config: GatewayConfig, tuning: GatewayTuning = {}): Promise<Gateway> {
  const log = tuning.log ?? jsonLog('kernelhop-gateway');
  await fsp.mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const tls = await loadServerTls(config.tls ?? { mode: 'off' }, config.dataDir, config.host);
  const stores = await openStores(config, log);
  const { store, metadata, snapshots, runtimeTokens, usage, limits } = stores;
  // The scheduler is made below; its classes are read at scrape time only.
  const metrics = new GatewayMetrics(() => scheduler.classes());
  // Made once the gRPC port is known (provided runtimes are told it); registrations before that are not its.
  let autoscaler: Autoscaler | undefined;
  const scheduler: Scheduler = new Scheduler({
    heartbeatIntervalMs: tuning.heartbeatIntervalMs,
    missedHeartbeats: tuning.missedHeartbeats,
    cancelGraceMs: tuning.cancelGraceMs,
    warmGraceMs: (config.warmGraceS ?? DEFAULT_WARM_GRACE_S) * 1000,
    slotLimit: (user) => limits.slots(user),
    runtimeLog: metadata,
    log,
    provisionable: config.elastic?.classes ?? [],
    admitRegistration: (credential) => autoscaler?.admitRegistration(credential) ?? null,
    observer: {
      started: ({ runId, req, runtime, waitedSeconds }) => {
        metrics.runStarted(req.gpuClass, waitedSeconds);
        log(`run started on ${runtime} after ${waitedSeconds.toFixed(3)} s in the queue`, { run: runId, runtime, user: req.user, gpu_class: req.gpuClass });
      },
      released: (use) => {
        const gpuSeconds = (use.endedAt - use.startedAt) / 1000;
        log(`run ended (${use.outcome}) after ${gpuSeconds.toFixed(3)} GPU-seconds`, {
          run: use.runId,
          runtime: use.runtime,
          user: use.req.user,
          gpu_class: use.req.gpuClass,
          outcome: use.outcome,
          gpu_seconds: gpuSeconds,
        });
        metrics.runEnded({ user: use.req.user, gpuClass: use.req.gpuClass, outcome: use.outcome, gpuSeconds, timings: use.timings });
        const { user, notebook, cell, gpuClass } = use.req;
        const entry = { runId: use.runId, user, notebook, cell, gpuClass, runtime: use.runtime, startedAt: use.startedAt, endedAt: use.endedAt, outcome: use.outcome };
        usage.record(entry).catch((e: unknown) => log(`counting the GPU-seconds failed: ${String(e)}`, { run: use.runId }));
      },
    },
  });
  // Runtimes use gRPC with runtime tokens; users (the admin too) reach the store only through the WebSocket.
  await snapshots.ensureAdmin(config.adminUser ?? DEFAULT_ADMIN_USER, config.token);
  // One id per start: a restarted gateway is a new incarnation, and its previous one's runs are claimed as lapsed.
  const gatewayId = randomUUID();
  const runs = new RunService({ store, snapshots, metadata, scheduler, gatewayId, log });
  const collector = new Collector(store, snapshots, () => runs.activeSnapshots(), new Mutex());
  const api = new SnapshotApi(store, snapshots, collector);

  // A new key per start: sessions do not outlive the gateway's runs anyway (a runtime's warm workers are per session).
  const sessionKey = randomBytes(32);
  const hub =
    config.hubApiUrl === undefined
      ? undefined
      : new HubIdentity({ apiUrl: config.hubApiUrl, snapshots, adminUser: config.adminUser ?? DEFAULT_ADMIN_USER, log });
  // The gateway's own tokens first (the admin's, `kernelhop user add`'s), then the Hub's.
  const authenticate = hub && (async (token: string) => (await snapshots.authenticate(token)) ?? hub.authenticate(token));
  const pool = new PoolOps(scheduler, limits, snapshots);
  const wsApi = new WsApi({
    snapshots,
    api,
    store,
    scheduler,
    runs,
    pool,
    runtimeTokens,
    usage,
    metrics,
    sessionKey,
    log,
    pingIntervalMs: tuning.pingIntervalMs,
    authenticate,
  });
  let grpcPort = 0;
  const onRequest: http.RequestListener = (req, res) => {
    if (req.method === 'GET' && req.url === RUNTIMES_INFO_PATH) {
      // A runtime given the WebSocket URL learns here where to register (runtime/src/gatewayAddress.ts).
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ grpc_port: grpcPort }));
      return;
    }
    if (new URL(req.url ?? '/', 'http://gateway').pathname === BLOB_UPLOAD_PATH) {
      wsApi.handleUpload(req, res);
      return;
    }
    if (req.method === 'GET' && req.url === METRICS_PATH) {
      serveMetrics(req, res, metrics, snapshots, log);
      return;
    }
    res.writeHead(426, { 'Content-Type': 'text/plain; charset=utf-8', Upgrade: 'websocket' });
    res.end(`kernelhop gateway: connect a WebSocket to ${WS_PATH}\n`);
  };
  const httpServer = tls === undefined ? http.createServer(onRequest) : https.createServer({ cert: tls.certChain, key: tls.key }, onRequest);
  httpServer.on('upgrade', (req, socket, head) => wsApi.handleUpgrade(req, socket, head));
  const grpcApi = new GrpcApi(runtimeTokens, snapshots, store, scheduler, log, metrics);

  let wsPort: number;
  try {
    wsPort = await listen(httpServer, config.host, config.port);
    grpcPort = await grpcApi.bind(config.host, config.grpcPort, tls);
  } catch (e) {
    httpServer.close();
    await stores.close();
    scheduler.close();
    throw e;
  }

  // Bound to every address, this host reaches it on loopback, which is also a name of the --tls auto certificate.
  const reachable = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  const host = reachable.includes(':') ? `[${reachable}]` : reachable;
  const wsUrl = `${tls === undefined ? 'ws' : 'wss'}://${host}:${wsPort}${WS_PATH}`;
  const grpcAddress = `${host}:${grpcPort}`;
  // Kernels read gateway.json for where the gateway is; the admin's token goes to a file of its own, read only by
  // the `kernelhop` command's admin operations. Both are the gateway owner's alone.
  // With TLS it also says what to verify against: the CA made here (auto) and the certificate's fingerprint.
  const discovery = { url: wsUrl, grpc: grpcAddress, ...(tls && { ca: tls.caFile, fingerprint: tls.fingerprint }) };
  await writePrivate(path.join(config.dataDir, 'gateway.json'), `${JSON.stringify(discovery, null, 2)}\n`);
  await writePrivate(path.join(config.dataDir, ADMIN_TOKEN_FILE), `${config.token}\n`);
  if (config.runtimeTokenFile !== undefined) await writeRuntimeToken(runtimeTokens, config.runtimeTokenFile);
  if (config.elastic !== undefined) {
    const e = config.elastic;
    autoscaler = new Autoscaler(
      { ...e, provider: tuning.provider ?? (await openProvider(e, log)), gateway: e.runtimeGateway ?? grpcAddress, tickMs: tuning.autoscaleTickMs },
      scheduler,
      runtimeTokens,
      log,
    );
    metrics.watchElastic(() => autoscaler?.counts() ?? []);
  }
  const liveness = new Liveness({
    metadata,
    gateway: { id: gatewayId, addr: wsUrl, intervalMs: Math.round((config.livenessS ?? DEFAULT_LIVENESS_S) * 1000) },
    scheduler,
    log,
  });
  await liveness.start();

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      runs.close();
      await liveness.close();
      await autoscaler?.close();
      scheduler.close();
      wsApi.close();
      await Promise.all([new Promise<void>((r) => httpServer.close(() => r())), grpcApi.close()]);
      httpServer.closeAllConnections();
      await stores.close();
    })());

  return { wsUrl, grpcAddress, tlsFingerprint: tls?.fingerprint, store, metadata, snapshots, collector, scheduler, runs, runtimeTokens, usage, metrics, close };
}

function openProvider(e: ElasticConfig, log: Log): Promise<RuntimeProvider> {
  if (e.provider.kind === 'command') return Promise.resolve(new CommandProvider(e.provider.command, log));
  return KubernetesProvider.open(
    { templateFile: e.provider.template, namespace: e.provider.namespace, kubeconfig: e.provider.kubeconfig },
    log,
  );
}

/** The admin's token, under the data directory: for `kernelhop` on this host, never for kernels. */
export const ADMIN_TOKEN_FILE = 'admin-token';

async function writePrivate(file: string, text: string): Promise<void> {
  await fsp.writeFile(file, text, { mode: 0o600 });
  // writeFile's mode only applies when it creates the file; an older one may be wider.
  await fsp.chmod(file, 0o600);
}

/**
 * For a runtime started next to this gateway (`kernelhop up`, binder): a runtime token in `file`, kept across starts
 * while it stays live, so restarts do not pile up tokens.
 */
async function writeRuntimeToken(tokens: RuntimeTokenStore, file: string): Promise<void> {
  const kept = await fsp.readFile(file, 'utf8').then(
    (text) => text.trim(),
    () => '',
  );
  if (kept !== '' && (await tokens.authenticate(kept)) !== undefined) return;
  const { token } = await tokens.create(null, Date.now());
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writePrivate(file, `${token}\n`);
}

function listen(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
