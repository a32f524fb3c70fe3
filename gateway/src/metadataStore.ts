// Metadata: runtimes seen, runs, refs. An interface (Promise-returning: Postgres implements it too,
// stores/postgresMetadataStore.ts) and the embedded SQLite implementation.
import { SqliteDatabase, openGatewayDb } from './sqlite.js';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { BlobStore } from './blobStore.js';
import { checkSnapshot } from './snapshotCheck.js';
import { migrateSqlite } from './stores/migrations/index.js';

export interface RuntimeInfo {
  id: string;
  name: string;
  classes: Array<{ name: string; simulated: boolean }>;
  capacity: number;
  version: string;
}

export type RunStatus = 'queued' | 'running' | 'done' | 'failed';

export interface RunRecord {
  id: string;
  session: string;
  gpuClass: string;
  snapshot: string;
  status: RunStatus;
  runtimeId: string | null;
  /** "ok" | "error" for a done run: whether the user's code raised. */
  outcome: string | null;
  resultSnapshot: string | null;
  errorCode: string | null;
  errorMessage: string | null;
  timingsJson: string | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

export type RunEnd =
  | { status: 'done'; outcome: string; resultSnapshot: string; timingsJson: string }
  | { status: 'failed'; errorCode: string; errorMessage: string };

export interface RefRecord {
  name: string;
  manifest: string;
  owner: string;
  updatedAt: number;
}

export class RefError extends Error {
  override name = 'RefError';
}

export interface MetadataStore {
  runtimeRegistered(info: RuntimeInfo): Promise<void>;
  runtimeSeen(id: string): Promise<void>;
  runtimeGone(id: string, reason: string): Promise<void>;
  runCreated(run: { id: string; session: string; gpuClass: string; snapshot: Digest }): Promise<void>;
  runStarted(id: string, runtimeId: string): Promise<void>;
  runFinished(id: string, end: RunEnd): Promise<void>;
  getRun(id: string): Promise<RunRecord | undefined>;
  /** Points `name` at a snapshot; refused (RefError) unless the manifest and all its chunks are stored. */
  setRef(name: string, manifest: Digest, owner: string): Promise<void>;
  getRef(name: string): Promise<RefRecord | undefined>;
  close(): Promise<void>;
}

/** A runs row as both SQL databases give it. */
export interface RunRow {
  id: string;
  session: string;
  gpu_class: string;
  snapshot: string;
  status: RunStatus;
  runtime_id: string | null;
  outcome: string | null;
  result_snapshot: string | null;
  error_code: string | null;
  error_message: string | null;
  timings_json: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

export interface RefRow {
  name: string;
  manifest: string;
  owner: string;
  updated_at: number;
}

export function toRunRecord(r: RunRow): RunRecord {
  return {
    id: r.id,
    session: r.session,
    gpuClass: r.gpu_class,
    snapshot: r.snapshot,
    status: r.status,
    runtimeId: r.runtime_id,
    outcome: r.outcome,
    resultSnapshot: r.result_snapshot,
    errorCode: r.error_code,
    errorMessage: r.error_message,
    timingsJson: r.timings_json,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
  };
}

export class SqliteMetadataStore implements MetadataStore {
  private readonly db: SqliteDatabase;

  /** `blobs` is consulted by setRef: a ref may only name a snapshot whose blobs are all stored. */
  constructor(file: string, private readonly blobs: BlobStore) {
    this.db = openGatewayDb(file);
    this.db.pragma('synchronous = NORMAL');
    migrateSqlite(this.db, file);
  }

  async runtimeRegistered(info: RuntimeInfo): Promise<void> {
    const now = Date.now();
    this.db
      .prepare(
        `INSERT INTO runtimes (id, name, classes_json, capacity, version, registered_at, last_seen_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(info.id, info.name, JSON.stringify(info.classes), info.capacity, info.version, now, now);
  }

  async runtimeSeen(id: string): Promise<void> {
    this.db.prepare('UPDATE runtimes SET last_seen_at = ? WHERE id = ?').run(Date.now(), id);
  }

  async runtimeGone(id: string, reason: string): Promise<void> {
    this.db.prepare('UPDATE runtimes SET gone_at = ?, gone_reason = ? WHERE id = ?').run(Date.now(), reason, id);
  }

  async runCreated(run: { id: string; session: string; gpuClass: string; snapshot: Digest }): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO runs (id, session, gpu_class, snapshot, status, created_at) VALUES (?, ?, ?, ?, 'queued', ?)`,
      )
      .run(run.id, run.session, run.gpuClass, formatDigest(run.snapshot), Date.now());
  }

  async runStarted(id: string, runtimeId: string): Promise<void> {
    this.db
      .prepare(`UPDATE runs SET status = 'running', runtime_id = ?, started_at = ? WHERE id = ?`)
      .run(runtimeId, Date.now(), id);
  }

  async runFinished(id: string, end: RunEnd): Promise<void> {
    if (end.status === 'done') {
      this.db
        .prepare(
          `UPDATE runs SET status = 'done', outcome = ?, result_snapshot = ?, timings_json = ?, finished_at = ?
           WHERE id = ?`,
        )
        .run(end.outcome, end.resultSnapshot, end.timingsJson, Date.now(), id);
    } else {
      this.db
        .prepare(`UPDATE runs SET status = 'failed', error_code = ?, error_message = ?, finished_at = ? WHERE id = ?`)
        .run(end.errorCode, end.errorMessage, Date.now(), id);
    }
  }

  async getRun(id: string): Promise<RunRecord | undefined> {
    const r = this.db.prepare('SELECT * FROM runs WHERE id = ?').get(id) as RunRow | undefined;
    return r === undefined ? undefined : toRunRecord(r);
  }

  async setRef(name: string, manifest: Digest, owner: string): Promise<void> {
    if (name === '') throw new RefError('a ref needs a non-empty name');
    // Blobs are never deleted, so a snapshot found complete here stays complete once the ref is written.
    const check = await checkSnapshot(this.blobs, manifest);
    if (!check.ok) throw new RefError(`ref ${JSON.stringify(name)} not set: ${check.message}`);
    this.db
      .prepare(
        `INSERT INTO refs (name, manifest, owner, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(name) DO UPDATE SET manifest = excluded.manifest, owner = excluded.owner,
           updated_at = excluded.updated_at`,
      )
      .run(name, formatDigest(manifest), owner, Date.now());
  }

  async getRef(name: string): Promise<RefRecord | undefined> {
    const r = this.db.prepare('SELECT * FROM refs WHERE name = ?').get(name) as RefRow | undefined;
    return r === undefined ? undefined : { name: r.name, manifest: r.manifest, owner: r.owner, updatedAt: r.updated_at };
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
