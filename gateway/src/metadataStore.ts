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

/** gateway_lost: the gateway that relayed the run stopped beating, and another ended the run's row (liveness.ts). */
export type RunStatus = 'queued' | 'running' | 'done' | 'failed' | 'gateway_lost';

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
  /** The gateway that relayed it; null for rows from before gateways beat. */
  gatewayId: string | null;
  user: string | null;
}

export type RunEnd =
  | { status: 'done'; outcome: string; resultSnapshot: string; timingsJson: string }
  | { status: 'failed'; errorCode: string; errorMessage: string };

/** A run as it is created: its owner and what a usage row for it needs, should another gateway have to write one. */
export interface NewRun {
  id: string;
  session: string;
  gpuClass: string;
  snapshot: Digest;
  gatewayId: string;
  user: string;
  notebook: string;
  cell: string;
}

/** A gateway's beat: who it is, where kernels reach it, how often it beats. */
export interface GatewayBeat {
  id: string;
  addr: string;
  intervalMs: number;
}

/** A run of a lapsed gateway, ended as gateway_lost; `counted` when it was running and its usage row was written. */
export interface LostRun {
  runId: string;
  gatewayAddr: string;
  user: string;
  counted: boolean;
}

/** A gateway is lapsed once its last beat is older than this many of its intervals. */
export const LAPSED_BEATS = 3;

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
  runCreated(run: NewRun): Promise<void>;
  runStarted(id: string, runtimeId: string): Promise<void>;
  /** Its runtime refused it: waiting again, as it was before runStarted. */
  runRequeued(id: string): Promise<void>;
  runFinished(id: string, end: RunEnd): Promise<void>;
  getRun(id: string): Promise<RunRecord | undefined>;
  /** Writes this gateway's beat (its row made on the first). */
  beat(gateway: GatewayBeat, now: number): Promise<void>;
  /**
   * Ends the queued and running runs of every lapsed gateway as gateway_lost, at that gateway's last beat, and writes
   * a usage row for each that was running, in one transaction; a run is claimed once whichever gateways ask at once.
   */
  claimLapsed(now: number): Promise<LostRun[]>;
  /** Running runs per user on the live gateways other than `gatewayId`. */
  runningElsewhere(gatewayId: string, now: number): Promise<Map<string, number>>;
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
  gateway_id: string | null;
  user: string | null;
  notebook: string | null;
  cell: string | null;
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
    gatewayId: r.gateway_id,
    user: r.user,
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

  async runCreated(run: NewRun): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO runs (id, session, gpu_class, snapshot, status, created_at, gateway_id, "user", notebook, cell)
         VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)`,
      )
      .run(run.id, run.session, run.gpuClass, formatDigest(run.snapshot), Date.now(), run.gatewayId, run.user, run.notebook, run.cell);
  }

  async runStarted(id: string, runtimeId: string): Promise<void> {
    this.db
      .prepare(`UPDATE runs SET status = 'running', runtime_id = ?, started_at = ? WHERE id = ?`)
      .run(runtimeId, Date.now(), id);
  }

  async runRequeued(id: string): Promise<void> {
    this.db.prepare(`UPDATE runs SET status = 'queued', runtime_id = NULL, started_at = NULL WHERE id = ?`).run(id);
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

  async beat(gateway: GatewayBeat, now: number): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO gateways (id, addr, started_at, beat_at, beat_ms) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at`,
      )
      .run(gateway.id, gateway.addr, now, now, gateway.intervalMs);
  }

  async claimLapsed(now: number): Promise<LostRun[]> {
    // One gateway per SQLite file: its claim races only its previous incarnation's rows, and the status test in the
    // UPDATE keeps even that to once.
    return this.db.transaction(() => {
      const lapsed = this.db.prepare(LAPSED_RUNS_SQL).all(LAPSED_BEATS, now) as LapsedRow[];
      const end = this.db.prepare(
        `UPDATE runs SET status = 'gateway_lost', error_code = 'gateway_lost', error_message = ?, finished_at = ?
         WHERE id = ? AND status IN ('queued', 'running')`,
      );
      const count = this.db.prepare(
        `INSERT OR IGNORE INTO usage (run_id, "user", notebook, cell, gpu_class, runtime, started_at, ended_at, gpu_ms, outcome)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'gateway_lost')`,
      );
      const lost: LostRun[] = [];
      for (const r of lapsed) {
        if (end.run(lostMessage(r.addr), r.ended_at, r.id).changes !== 1) continue;
        const counted = r.started_at !== null;
        if (counted) count.run(r.id, r.user ?? '', r.notebook ?? '', r.cell ?? '', r.gpu_class, r.runtime, r.started_at, r.ended_at, r.ended_at - (r.started_at as number));
        lost.push({ runId: r.id, gatewayAddr: r.addr, user: r.user ?? '', counted });
      }
      return lost;
    })();
  }

  async runningElsewhere(gatewayId: string, now: number): Promise<Map<string, number>> {
    const rows = this.db.prepare(RUNNING_ELSEWHERE_SQL.replace(/\$\d/g, '?')).all(gatewayId, LAPSED_BEATS, now) as Array<{ user: string; n: number }>;
    return new Map(rows.map((r) => [r.user, r.n]));
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

/** A lapsed gateway's run as claimLapsed reads it (SQLite; Postgres claims in one statement). */
interface LapsedRow {
  id: string;
  user: string | null;
  notebook: string | null;
  cell: string | null;
  gpu_class: string;
  runtime: string;
  started_at: number | null;
  ended_at: number;
  addr: string;
}

/**
 * The runs of lapsed gateways not yet ended, and when each ended: at its gateway's last beat, the last moment that
 * gateway was known to hold it (its runtimes cancel its runs as soon as its streams close), but never before the run
 * started. Written for SQLite's scalar MAX.
 */
const LAPSED_RUNS_SQL = `
SELECT r.id, r."user" AS user, r.notebook, r.cell, r.gpu_class, COALESCE(rt.name, r.runtime_id, '') AS runtime, r.started_at,
  MAX(g.beat_at, r.created_at, COALESCE(r.started_at, 0)) AS ended_at, g.addr
FROM runs r JOIN gateways g ON g.id = r.gateway_id LEFT JOIN runtimes rt ON rt.id = r.runtime_id
WHERE g.beat_at + ? * g.beat_ms < ? AND r.status IN ('queued', 'running')`;

/** Both databases (each $N once and in order, so SQLite's ?): $1 this gateway, $2 LAPSED_BEATS, $3 now. */
export const RUNNING_ELSEWHERE_SQL = `
SELECT r."user" AS "user", COUNT(*) AS n FROM runs r JOIN gateways g ON g.id = r.gateway_id
WHERE r.status = 'running' AND g.id <> $1 AND g.beat_at + $2 * g.beat_ms >= $3 AND r."user" IS NOT NULL
GROUP BY r."user"`;

export function lostMessage(addr: string): string {
  return `the gateway at ${addr} stopped beating while it relayed the run; another gateway ended it`;
}
