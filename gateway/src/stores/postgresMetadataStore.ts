// Metadata (runtimes, runs, refs) in PostgreSQL with node-postgres: the same interface and rules as SQLite's.
import pg from 'pg';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { BlobStore } from '../blobStore.js';
import { MetadataStore, RefError, RefRecord, RefRow, RunEnd, RunRow, RuntimeInfo, RunRecord, toRunRecord } from '../metadataStore.js';
import { checkSnapshot } from '../snapshotCheck.js';
import { Migration, POSTGRES_MIGRATIONS, SCHEMA_VERSION_TABLE, pendingMigrations } from './migrations/index.js';
import { redact } from './storeUrl.js';

/** Any number that fits: every BIGINT here is milliseconds since the epoch, far below 2^53. */
const INT8_OID = 20;
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/** Taken while migrating, so gateways starting together on one database migrate it once. */
const MIGRATION_LOCK = 0x6b68_6d69; // "khmi"

export class PostgresMetadataStore implements MetadataStore {
  /**
   * Writes in the order they were asked for: the scheduler records a run's steps without waiting for each, and a
   * pool would otherwise let "started" land before "created".
   */
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly pool: pg.Pool,
    private readonly blobs: BlobStore,
  ) {}

  /** Connects, migrates, and fails with what to check when the database cannot be reached. */
  static async open(url: string, blobs: BlobStore): Promise<PostgresMetadataStore> {
    const pool = new pg.Pool({ connectionString: url, max: 8, types, connectionTimeoutMillis: 10_000 });
    // An idle client losing its connection (server restart) must not take the gateway down; the next query reconnects.
    pool.on('error', () => undefined);
    try {
      await migrate(pool, POSTGRES_MIGRATIONS, redact(url));
    } catch (e) {
      await pool.end();
      if (e instanceof Error && e.name === 'MigrationError') throw e;
      throw new Error(`the metadata database ${redact(url)} did not answer: ${String((e as Error).message ?? e)} (check --metadata, the server and its pg_hba.conf)`);
    }
    return new PostgresMetadataStore(pool, blobs);
  }

  private write(sql: string, params: unknown[]): Promise<void> {
    const result = this.tail.then(() => this.pool.query(sql, params));
    this.tail = result.catch(() => undefined);
    return result.then(() => undefined);
  }

  async runtimeRegistered(info: RuntimeInfo): Promise<void> {
    const now = Date.now();
    await this.write(
      `INSERT INTO runtimes (id, name, classes_json, capacity, version, registered_at, last_seen_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [info.id, info.name, JSON.stringify(info.classes), info.capacity, info.version, now, now],
    );
  }

  async runtimeSeen(id: string): Promise<void> {
    await this.write('UPDATE runtimes SET last_seen_at = $1 WHERE id = $2', [Date.now(), id]);
  }

  async runtimeGone(id: string, reason: string): Promise<void> {
    await this.write('UPDATE runtimes SET gone_at = $1, gone_reason = $2 WHERE id = $3', [Date.now(), reason, id]);
  }

  async runCreated(run: { id: string; session: string; gpuClass: string; snapshot: Digest }): Promise<void> {
    await this.write(
      `INSERT INTO runs (id, session, gpu_class, snapshot, status, created_at) VALUES ($1, $2, $3, $4, 'queued', $5)`,
      [run.id, run.session, run.gpuClass, formatDigest(run.snapshot), Date.now()],
    );
  }

  async runStarted(id: string, runtimeId: string): Promise<void> {
    await this.write(`UPDATE runs SET status = 'running', runtime_id = $1, started_at = $2 WHERE id = $3`, [runtimeId, Date.now(), id]);
  }

  async runFinished(id: string, end: RunEnd): Promise<void> {
    if (end.status === 'done') {
      await this.write(
        `UPDATE runs SET status = 'done', outcome = $1, result_snapshot = $2, timings_json = $3, finished_at = $4 WHERE id = $5`,
        [end.outcome, end.resultSnapshot, end.timingsJson, Date.now(), id],
      );
    } else {
      await this.write(
        `UPDATE runs SET status = 'failed', error_code = $1, error_message = $2, finished_at = $3 WHERE id = $4`,
        [end.errorCode, end.errorMessage, Date.now(), id],
      );
    }
  }

  async getRun(id: string): Promise<RunRecord | undefined> {
    await this.tail; // reads see the writes asked for before them, as SQLite's do
    const { rows } = await this.pool.query<RunRow>('SELECT * FROM runs WHERE id = $1', [id]);
    return rows[0] === undefined ? undefined : toRunRecord(rows[0]);
  }

  async setRef(name: string, manifest: Digest, owner: string): Promise<void> {
    if (name === '') throw new RefError('a ref needs a non-empty name');
    const check = await checkSnapshot(this.blobs, manifest);
    if (!check.ok) throw new RefError(`ref ${JSON.stringify(name)} not set: ${check.message}`);
    await this.write(
      `INSERT INTO refs (name, manifest, owner, updated_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (name) DO UPDATE SET manifest = excluded.manifest, owner = excluded.owner, updated_at = excluded.updated_at`,
      [name, formatDigest(manifest), owner, Date.now()],
    );
  }

  async getRef(name: string): Promise<RefRecord | undefined> {
    await this.tail;
    const { rows } = await this.pool.query<RefRow>('SELECT * FROM refs WHERE name = $1', [name]);
    const r = rows[0];
    return r === undefined ? undefined : { name: r.name, manifest: r.manifest, owner: r.owner, updatedAt: r.updated_at };
  }

  private closing?: Promise<void>;

  close(): Promise<void> {
    return (this.closing ??= this.tail.then(() => this.pool.end()));
  }
}

/** Applies what the database lacks, each migration and its schema_version row in one transaction, under a lock. */
async function migrate(pool: pg.Pool, migrations: readonly Migration[], where: string): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query(SCHEMA_VERSION_TABLE);
    const applied = (await client.query<{ version: number }>('SELECT version FROM schema_version')).rows.map((r) => r.version);
    for (const m of pendingMigrations(migrations, applied, where)) {
      await client.query(m.sql);
      await client.query('INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()]);
    }
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    client.release();
  }
}
