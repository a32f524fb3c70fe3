// The usage ledger in PostgreSQL: the same interface and report as SqliteUsageLedger; every gateway on the database
// records its runs here, so a report counts them all.
import pg from 'pg';
import { USAGE_GROUPS, USAGE_TOP, UsageEntry, UsageFilter, UsageGroup, UsageLedger, UsageReport, gpuMs } from '../usage.js';

const GROUP_KEY: Record<UsageGroup, string> = {
  user: '"user"',
  notebook: '"user" || chr(9) || notebook',
  cell: '"user" || chr(9) || notebook || chr(9) || cell',
  gpu_class: 'gpu_class',
  runtime: 'runtime',
};

export class PostgresUsageLedger implements UsageLedger {
  /** On a pool the caller owns and ends (openStores). */
  constructor(private readonly pool: pg.Pool) {}

  async record(e: UsageEntry): Promise<void> {
    await this.pool.query(
      `INSERT INTO usage (run_id, "user", notebook, cell, gpu_class, runtime, started_at, ended_at, gpu_ms, outcome)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (run_id) DO NOTHING`,
      [e.runId, e.user, e.notebook, e.cell, e.gpuClass, e.runtime, e.startedAt, e.endedAt, gpuMs(e), e.outcome],
    );
  }

  async report(filter: UsageFilter): Promise<UsageReport> {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (filter.user !== undefined) {
      args.push(filter.user);
      where.push(`"user" = $${args.length}`);
    }
    if (filter.since !== undefined) {
      args.push(filter.since);
      where.push(`ended_at >= $${args.length}`);
    }
    const clause = where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`;
    // SUM of BIGINT is NUMERIC in Postgres (a string to node-postgres): cast back, the type parser makes it a number.
    const total = (await this.pool.query<{ runs: number; ms: number }>(
      `SELECT COUNT(*) AS runs, COALESCE(SUM(gpu_ms), 0)::bigint AS ms FROM usage ${clause}`,
      args,
    )).rows[0] ?? { runs: 0, ms: 0 };
    const by = {} as UsageReport['by'];
    for (const group of USAGE_GROUPS) {
      const { rows } = await this.pool.query<{ key: string; runs: number; ms: number }>(
        `SELECT ${GROUP_KEY[group]} AS key, COUNT(*) AS runs, SUM(gpu_ms)::bigint AS ms FROM usage ${clause}
         GROUP BY 1 ORDER BY ms DESC, (${GROUP_KEY[group]}) COLLATE "C" LIMIT ${USAGE_TOP}`,
        args,
      );
      by[group] = rows.map((r) => ({ key: r.key, runs: r.runs, gpuSeconds: r.ms / 1000 }));
    }
    return { since: filter.since ?? null, total: { runs: total.runs, gpuSeconds: total.ms / 1000 }, by };
  }

  async close(): Promise<void> {
    // The pool is openStores'.
  }
}
