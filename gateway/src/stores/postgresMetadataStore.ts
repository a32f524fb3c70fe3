// Metadata (runtimes, runs, refs) in PostgreSQL with node-postgres: the same interface and rules as SQLite's.
import pg from 'pg';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { BlobStore } from '../blobStore.js';
import { MetadataStore, RefError, RefRecord, RefRow, RunEnd, RunRow, RuntimeInfo, RunRecord, toRunRecord } from '../metadataStore.js';
import { checkSnapshot } from '../snapshotCheck.js';
import { openPostgres } from './postgres.js';

export class PostgresMetadataStore implements MetadataStore {
  /**
   * Writes in the order they were asked for: the scheduler records a run's steps without waiting for each, and a
   * pool would otherwise let "started" land before "created".
   */
  private tail: Promise<unknown> = Promise.resolve();

  /** On a pool the caller owns (openStores shares one among the Postgres stores) unless `ownsPool`. */
  constructor(
    private readonly pool: pg.Pool,
    private readonly blobs: BlobStore,
    private readonly ownsPool = false,
  ) {}

  /** Its own pool: connects, migrates, and fails with what to check when the database cannot be reached. */
  static async open(url: string, blobs: BlobStore): Promise<PostgresMetadataStore> {
    return new PostgresMetadataStore(await openPostgres(url), blobs, true);
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
    return (this.closing ??= this.tail.then(() => (this.ownsPool ? this.pool.end() : undefined)));
  }
}
