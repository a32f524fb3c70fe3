// Runtime tokens in PostgreSQL: the same interface and rules as SqliteRuntimeTokens, so a runtime registers with any
// gateway on the database, and a token revoked on one is refused by all.
import pg from 'pg';
import { RuntimeCredential, RuntimeTokenRow, RuntimeTokenStore, newRuntimeToken, toCredential } from '../runtimeTokens.js';
import { hashToken } from '../snapshotStore.js';

export class PostgresRuntimeTokens implements RuntimeTokenStore {
  /** On a pool the caller owns and ends (openStores). */
  constructor(private readonly pool: pg.Pool) {}

  async create(gpuClass: string | null, now: number): Promise<{ credential: RuntimeCredential; token: string }> {
    const { id, token } = newRuntimeToken();
    await this.pool.query('INSERT INTO runtime_tokens (id, token_hash, gpu_class, created_at, revoked_at) VALUES ($1, $2, $3, $4, NULL)', [
      id,
      hashToken(token),
      gpuClass,
      now,
    ]);
    return { credential: { id, gpuClass, createdAt: now, revokedAt: null }, token };
  }

  async authenticate(token: string): Promise<RuntimeCredential | undefined> {
    const { rows } = await this.pool.query<RuntimeTokenRow>('SELECT * FROM runtime_tokens WHERE token_hash = $1 AND revoked_at IS NULL', [
      hashToken(token),
    ]);
    return rows[0] === undefined ? undefined : toCredential(rows[0]);
  }

  async list(): Promise<RuntimeCredential[]> {
    const { rows } = await this.pool.query<RuntimeTokenRow>('SELECT * FROM runtime_tokens ORDER BY created_at, id COLLATE "C"');
    return rows.map(toCredential);
  }

  async revoke(id: string, now: number): Promise<boolean> {
    const res = await this.pool.query('UPDATE runtime_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [now, id]);
    return (res.rowCount ?? 0) > 0;
  }

  async close(): Promise<void> {
    // The pool is openStores'.
  }
}
