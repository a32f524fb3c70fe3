// GPU-seconds, counted per run (ARCHITECTURE.md, "Counting and seeing"): from the moment a runtime took the run, which
// is when its slot stopped being free for anyone else, to the moment the run ended. One row per run that reached a
// runtime; runs refused or cancelled while queued held no GPU and cost nothing.
import { SqliteDatabase, openGatewayDb } from './sqlite.js';
import { migrateSqlite } from './stores/migrations/index.js';

export interface UsageEntry {
  runId: string;
  user: string;
  /** The notebook's path as the kernel's Jupyter server named it; '' when the kernel runs outside a notebook. */
  notebook: string;
  /** The cell's id in the notebook; '' when unknown. */
  cell: string;
  gpuClass: string;
  runtime: string;
  startedAt: number;
  endedAt: number;
  /** 'ok' | 'error' (the cell raised) | a failure code ('timeout', 'runtime_lost', ...). */
  outcome: string;
}

export interface UsageFilter {
  /** Only this user's runs; undefined = everyone's. */
  user?: string;
  /** Only runs that ended at or after this time (ms since the epoch). */
  since?: number;
}

export interface UsageLine {
  runs: number;
  gpuSeconds: number;
}

export type UsageGroup = 'user' | 'notebook' | 'cell' | 'gpu_class' | 'runtime';
export const USAGE_GROUPS: readonly UsageGroup[] = ['user', 'notebook', 'cell', 'gpu_class', 'runtime'];

export interface UsageReport {
  since: number | null;
  total: UsageLine;
  /** Per group, its keys with their lines, most GPU-seconds first. Notebooks are keyed `user\tnotebook` and cells
   * `user\tnotebook\tcell`, so that two users' notebooks of one name stay apart. */
  by: Record<UsageGroup, Array<UsageLine & { key: string }>>;
}

export interface UsageLedger {
  record(entry: UsageEntry): Promise<void>;
  report(filter: UsageFilter): Promise<UsageReport>;
  close(): Promise<void>;
}

/** A report lists at most this many keys per group: the heaviest ones, which are what a cost question asks about. */
export const USAGE_TOP = 50;

const GROUP_KEY: Record<UsageGroup, string> = {
  user: 'user',
  notebook: "user || char(9) || notebook",
  cell: "user || char(9) || notebook || char(9) || cell",
  gpu_class: 'gpu_class',
  runtime: 'runtime',
};

export class SqliteUsageLedger implements UsageLedger {
  private readonly db: SqliteDatabase;

  constructor(file: string) {
    this.db = openGatewayDb(file);
    migrateSqlite(this.db, file);
  }

  async record(e: UsageEntry): Promise<void> {
    this.db
      .prepare(
        `INSERT OR IGNORE INTO usage (run_id, user, notebook, cell, gpu_class, runtime, started_at, ended_at, gpu_ms, outcome)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(e.runId, e.user, e.notebook, e.cell, e.gpuClass, e.runtime, e.startedAt, e.endedAt, gpuMs(e), e.outcome);
  }

  async report(filter: UsageFilter): Promise<UsageReport> {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (filter.user !== undefined) {
      where.push('user = ?');
      args.push(filter.user);
    }
    if (filter.since !== undefined) {
      where.push('ended_at >= ?');
      args.push(filter.since);
    }
    const clause = where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`;
    const total = this.db
      .prepare(`SELECT COUNT(*) AS runs, COALESCE(SUM(gpu_ms), 0) AS ms FROM usage ${clause}`)
      .get(...args) as { runs: number; ms: number };
    const by = {} as UsageReport['by'];
    for (const group of USAGE_GROUPS) {
      const rows = this.db
        .prepare(
          `SELECT ${GROUP_KEY[group]} AS key, COUNT(*) AS runs, SUM(gpu_ms) AS ms FROM usage ${clause}
           GROUP BY key ORDER BY ms DESC, key LIMIT ${USAGE_TOP}`,
        )
        .all(...args) as Array<{ key: string; runs: number; ms: number }>;
      by[group] = rows.map((r) => ({ key: r.key, runs: r.runs, gpuSeconds: r.ms / 1000 }));
    }
    return { since: filter.since ?? null, total: { runs: total.runs, gpuSeconds: total.ms / 1000 }, by };
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

export function gpuMs(e: UsageEntry): number {
  return Math.max(0, Math.round(e.endedAt - e.startedAt));
}
