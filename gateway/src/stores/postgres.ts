// The one PostgreSQL pool every Postgres store of a gateway shares (--metadata postgres://...): opened, migrated, and
// the transaction helper the stores check and write with.
import pg from 'pg';
import { Migration, POSTGRES_MIGRATIONS, SCHEMA_VERSION_TABLE, pendingMigrations } from './migrations/index.js';
import { redact } from './storeUrl.js';

/** Any number that fits: every BIGINT here is milliseconds since the epoch or a byte count, far below 2^53. */
const INT8_OID = 20;
export const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/** Taken while migrating, so gateways starting together on one database migrate it once. */
const MIGRATION_LOCK = 0x6b68_6d69; // "khmi"

/** Connects, migrates, and fails with what to check when the database cannot be reached. */
export async function openPostgres(url: string): Promise<pg.Pool> {
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
  return pool;
}

/** `fn` inside BEGIN/COMMIT on one client of the pool, rolled back if it throws. */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (e) {
    await client.query('ROLLBACK').catch((rollback: Error) => {
      broken = rollback; // the connection itself failed: the pool drops it rather than lend it again
    });
    throw e;
  } finally {
    client.release(broken);
  }
}

/** Applies what the database lacks, each migration and its schema_version row in one transaction, under a lock. */
async function migrate(pool: pg.Pool, migrations: readonly Migration[], where: string): Promise<void> {
  await inTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query(SCHEMA_VERSION_TABLE);
    const applied = (await client.query<{ version: number }>('SELECT version FROM schema_version')).rows.map((r) => r.version);
    for (const m of pendingMigrations(migrations, applied, where)) {
      await client.query(m.sql);
      await client.query('INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()]);
    }
  });
}
