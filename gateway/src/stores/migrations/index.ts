// Versioned migrations of the gateway's schema, one file per version, applied in order on open. Each file is the one
// declaration of its tables for both databases (a function of the dialect, for what only one of them has). Each
// database records what it has in schema_version; a migration once released is never edited, only followed.
import type { SqliteDatabase } from '../../sqlite.js';
import m0001 from './0001_runs_runtimes_refs.js';
import m0002 from './0002_users_snapshots_tokens_usage_limits.js';
import m0003 from './0003_gateways_run_owners.js';

/** The two SQL databases the gateway's stores run on. */
export type Dialect = 'sqlite' | 'postgres';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const MIGRATIONS: ReadonlyArray<{ version: number; name: string; sql: (dialect: Dialect) => string }> = [
  { version: 1, name: 'runs_runtimes_refs', sql: m0001 },
  { version: 2, name: 'users_snapshots_tokens_usage_limits', sql: m0002 },
  { version: 3, name: 'gateways_run_owners', sql: m0003 },
];

const forDialect = (dialect: Dialect): readonly Migration[] => MIGRATIONS.map((m) => ({ version: m.version, name: m.name, sql: m.sql(dialect) }));

export const SQLITE_MIGRATIONS: readonly Migration[] = forDialect('sqlite');
export const POSTGRES_MIGRATIONS: readonly Migration[] = forDialect('postgres');

/** Both databases record applied versions here (one row each). */
export const SCHEMA_VERSION_TABLE = `CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at BIGINT NOT NULL
)`;

export class MigrationError extends Error {
  override name = 'MigrationError';
}

/**
 * The migrations still to apply, in order. A database that has a version this gateway does not know was migrated by
 * a newer gateway: refused, since this one would misread its tables.
 */
export function pendingMigrations(all: readonly Migration[], applied: readonly number[], where: string): Migration[] {
  const known = new Set(all.map((m) => m.version));
  const unknown = applied.filter((v) => !known.has(v));
  if (unknown.length > 0) {
    throw new MigrationError(
      `${where} has schema version ${Math.max(...unknown)}, newer than this gateway knows (up to ${Math.max(0, ...known)}); ` +
        'upgrade kernelhop on this host, or point it at another database',
    );
  }
  const done = new Set(applied);
  return [...all].sort((a, b) => a.version - b.version).filter((m) => !done.has(m.version));
}

/**
 * Applies what a SQLite database lacks, each migration with its schema_version row in one transaction. Every SQLite
 * store calls it on open (the first one migrates, the others find nothing to do), so each works on its own.
 */
export function migrateSqlite(db: SqliteDatabase, file: string): void {
  // Only exec, prepare, all and run: the calls every SQLite driver has.
  db.exec(SCHEMA_VERSION_TABLE);
  const applied = (db.prepare('SELECT version FROM schema_version').all() as Array<{ version: number }>).map((r) => r.version);
  for (const m of pendingMigrations(SQLITE_MIGRATIONS, applied, file)) {
    db.exec('BEGIN IMMEDIATE');
    try {
      // Under the write lock: a store opened meanwhile on the same file may have applied it already.
      if (db.prepare('SELECT 1 FROM schema_version WHERE version = ?').get(m.version) === undefined) {
        db.exec(m.sql);
        db.prepare('INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, Date.now());
      }
      db.exec('COMMIT');
    } catch (e) {
      db.exec('ROLLBACK');
      throw e;
    }
  }
}
