// Metadata (runtimes, runs, refs) in PostgreSQL with node-postgres: the same interface and rules as SQLite's.
import pg from 'pg';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { BlobStore } from '../blobStore.js';
import {
  GatewayBeat,
  LAPSED_BEATS,
  LostRun,
  MetadataStore,
  NewRun,
  RUNNING_ELSEWHERE_SQL,
  RefError,
  RefRecord,
  RefRow,
  RunEnd,
  RunRow,
  RuntimeInfo,
  RunRecord,
  lostMessage,
  toRunRecord,
} from '../metadataStore.js';
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

  async runCreated(run: NewRun): Promise<void> {
    await this.write(
      `INSERT INTO runs (id, session, gpu_class, snapshot, status, created_at, gateway_id, "user", notebook, cell)
       VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9)`,
      [run.id, run.session, run.gpuClass, formatDigest(run.snapshot), Date.now(), run.gatewayId, run.user, run.notebook, run.cell],
    );
  }

  async runStarted(id: string, runtimeId: string): Promise<void> {
    await this.write(`UPDATE runs SET status = 'running', runtime_id = $1, started_at = $2 WHERE id = $3`, [runtimeId, Date.now(), id]);
  }

  async runRequeued(id: string): Promise<void> {
    await this.write(`UPDATE runs SET status = 'queued', runtime_id = NULL, started_at = NULL WHERE id = $1`, [id]);
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

  async beat(gateway: GatewayBeat, now: number): Promise<void> {
    await this.pool.query(
      `INSERT INTO gateways (id, addr, started_at, beat_at, beat_ms) VALUES ($1, $2, $3, $3, $4)
       ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at`,
      [gateway.id, gateway.addr, now, gateway.intervalMs],
    );
  }

  async claimLapsed(now: number): Promise<LostRun[]> {
    const { rows } = await this.pool.query<{ id: string; user: string | null; addr: string; counted: boolean }>(CLAIM_LAPSED_SQL, [LAPSED_BEATS, now]);
    return rows.map((r) => ({ runId: r.id, gatewayAddr: r.addr, user: r.user ?? '', counted: r.counted }));
  }

  async runningElsewhere(gatewayId: string, now: number): Promise<Map<string, number>> {
    const { rows } = await this.pool.query<{ user: string; n: number }>(RUNNING_ELSEWHERE_SQL, [gatewayId, LAPSED_BEATS, now]);
    return new Map(rows.map((r) => [r.user, r.n]));
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

/**
 * claimLapsed in one statement, so one transaction: the UPDATE takes each run's row lock, and a gateway claiming at the
 * same moment waits for it, then finds the row no longer queued or running and skips it (READ COMMITTED re-checks
 * the WHERE on the row as committed). A run so ends, and is counted, once. Its end is its gateway's last beat, never
 * before it started (SQLite's LAPSED_RUNS_SQL says why); a run that had started is the one with started_at.
 */
const CLAIM_LAPSED_SQL = `
WITH lost AS (
  UPDATE runs r SET status = 'gateway_lost', error_code = 'gateway_lost',
    error_message = '${lostMessage("' || g.addr || '")}', -- lostMessage, the lapsed gateway's address spliced in by SQL
    finished_at = GREATEST(g.beat_at, r.created_at, COALESCE(r.started_at, 0))
  FROM gateways g
  WHERE g.id = r.gateway_id AND g.beat_at + $1 * g.beat_ms < $2 AND r.status IN ('queued', 'running')
  RETURNING r.id, r."user", r.notebook, r.cell, r.gpu_class, r.runtime_id, r.started_at, r.finished_at, g.addr
), counted AS (
  INSERT INTO usage (run_id, "user", notebook, cell, gpu_class, runtime, started_at, ended_at, gpu_ms, outcome)
  SELECT l.id, COALESCE(l."user", ''), COALESCE(l.notebook, ''), COALESCE(l.cell, ''), l.gpu_class,
    COALESCE(rt.name, l.runtime_id, ''), l.started_at, l.finished_at, l.finished_at - l.started_at, 'gateway_lost'
  FROM lost l LEFT JOIN runtimes rt ON rt.id = l.runtime_id
  WHERE l.started_at IS NOT NULL
  ON CONFLICT (run_id) DO NOTHING
)
SELECT id, "user", addr, started_at IS NOT NULL AS counted FROM lost`;
