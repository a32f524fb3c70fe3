// Runtime credentials (ARCHITECTURE.md, "Threat model"): a runtime token may register a runtime (of its class, when it
// names one) and read only the chunks of runs the gateway assigned to that runtime. Distinct from the admin's and the
// users' tokens, which gRPC refuses, so no GPU host holds a credential that opens the WebSocket API.
import { randomBytes } from 'node:crypto';
import { SqliteDatabase, openGatewayDb } from './sqlite.js';
import { migrateSqlite } from './stores/migrations/index.js';
import { OpError } from './snapshotApi.js';
import { User, hashToken } from './snapshotStore.js';

export interface RuntimeCredential {
  id: string;
  /** The one class a runtime registered with this token may offer; null = any. */
  gpuClass: string | null;
  createdAt: number;
  revokedAt: number | null;
}

export interface RuntimeTokenStore {
  /** A new token (returned once; only its hash is stored). */
  create(gpuClass: string | null, now: number): Promise<{ credential: RuntimeCredential; token: string }>;
  /** The live (not revoked) credential a token is, if any. */
  authenticate(token: string): Promise<RuntimeCredential | undefined>;
  list(): Promise<RuntimeCredential[]>;
  /** False when there is no such token or it was revoked already. */
  revoke(id: string, now: number): Promise<boolean>;
  close(): Promise<void>;
}

export interface RuntimeTokenRow {
  id: string;
  gpu_class: string | null;
  created_at: number;
  revoked_at: number | null;
}

export const toCredential = (r: RuntimeTokenRow): RuntimeCredential => ({
  id: r.id,
  gpuClass: r.gpu_class,
  createdAt: r.created_at,
  revokedAt: r.revoked_at,
});

/** A new credential's id and token. */
export function newRuntimeToken(): { id: string; token: string } {
  return { id: `rt-${randomBytes(6).toString('hex')}`, token: `khr_${randomBytes(24).toString('base64url')}` };
}

export class SqliteRuntimeTokens implements RuntimeTokenStore {
  private readonly db: SqliteDatabase;

  constructor(file: string) {
    this.db = openGatewayDb(file);
    migrateSqlite(this.db, file);
  }

  async create(gpuClass: string | null, now: number): Promise<{ credential: RuntimeCredential; token: string }> {
    const { id, token } = newRuntimeToken();
    this.db
      .prepare('INSERT INTO runtime_tokens (id, token_hash, gpu_class, created_at, revoked_at) VALUES (?, ?, ?, ?, NULL)')
      .run(id, hashToken(token), gpuClass, now);
    return { credential: { id, gpuClass, createdAt: now, revokedAt: null }, token };
  }

  async authenticate(token: string): Promise<RuntimeCredential | undefined> {
    const r = this.db.prepare('SELECT * FROM runtime_tokens WHERE token_hash = ? AND revoked_at IS NULL').get(hashToken(token)) as
      | RuntimeTokenRow
      | undefined;
    return r === undefined ? undefined : toCredential(r);
  }

  async list(): Promise<RuntimeCredential[]> {
    return (this.db.prepare('SELECT * FROM runtime_tokens ORDER BY created_at, id').all() as RuntimeTokenRow[]).map(toCredential);
  }

  async revoke(id: string, now: number): Promise<boolean> {
    return this.db.prepare('UPDATE runtime_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(now, id).changes > 0;
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

export const RUNTIME_TOKEN_OPS = ['runtime_token_create', 'runtime_token_list', 'runtime_token_revoke'] as const;
export type RuntimeTokenOp = (typeof RUNTIME_TOKEN_OPS)[number];

export function isRuntimeTokenOp(op: string): op is RuntimeTokenOp {
  return (RUNTIME_TOKEN_OPS as readonly string[]).includes(op);
}

/** The WebSocket ops (admin only) over runtime tokens; `dropRuntimes` ends the runtimes of a revoked token. */
export async function runtimeTokenOp(
  tokens: RuntimeTokenStore,
  dropRuntimes: (credential: string) => number,
  user: User,
  op: RuntimeTokenOp,
  req: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  if (!user.admin) throw new OpError('forbidden', `${op} is for admins`);
  const describe = (c: RuntimeCredential) => ({ id: c.id, gpu_class: c.gpuClass, created_at: c.createdAt, revoked_at: c.revokedAt });
  switch (op) {
    case 'runtime_token_create': {
      const gpuClass = req.gpu_class ?? null;
      if (gpuClass !== null && (typeof gpuClass !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(gpuClass))) {
        throw new OpError('bad_request', 'gpu_class must be a class name (1-64 letters, digits, ".", "_" or "-"), or absent for any class');
      }
      const { credential, token } = await tokens.create(gpuClass, Date.now());
      return { ...describe(credential), token };
    }
    case 'runtime_token_list':
      return { tokens: (await tokens.list()).map(describe) };
    case 'runtime_token_revoke': {
      const id = req.token_id;
      if (typeof id !== 'string' || id === '') throw new OpError('bad_request', 'runtime_token_revoke needs "token_id" (from runtime_token_list)');
      if (!(await tokens.revoke(id, Date.now()))) throw new OpError('not_found', `no live runtime token ${JSON.stringify(id)}`);
      return { id, runtimes_dropped: dropRuntimes(id) };
    }
  }
}
