// Versioned migrations of the metadata schema, one file per version and database, applied in order on open.
// Each database records what it has in schema_version; a migration once released is never edited, only followed.
import sqlite0001 from './sqlite/0001_runs_runtimes_refs.js';
import postgres0001 from './postgres/0001_runs_runtimes_refs.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const SQLITE_MIGRATIONS: readonly Migration[] = [{ version: 1, name: 'runs_runtimes_refs', sql: sqlite0001 }];
export const POSTGRES_MIGRATIONS: readonly Migration[] = [{ version: 1, name: 'runs_runtimes_refs', sql: postgres0001 }];

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
