// The SQLite driver behind the gateway's stores: Node's built-in node:sqlite where this Node has it (22.13+, 23.4+;
// what the pip-installed gateway runs on, since a wheel carries no compiled addon), else better-sqlite3 (a checkout on
// Node 20). Both are synchronous; this file gives them one shape, the subset of better-sqlite3's the stores use.

export type SqliteValue = string | number | bigint | null | Uint8Array;
/** Positional values, or one object of named ones (`@name` in the SQL, `{ name }` here). */
export type SqliteParams = SqliteValue[] | [Record<string, SqliteValue>];

export interface SqliteStatement {
  run(...params: SqliteParams): { changes: number };
  get(...params: SqliteParams): unknown;
  all(...params: SqliteParams): unknown[];
  /** The same statement, answering each row's first column instead of the row. */
  pluck(): SqliteStatement;
}

export interface SqliteDatabase {
  readonly open: boolean;
  readonly driver: SqliteDriverName;
  exec(sql: string): void;
  /** `PRAGMA <text>`, for settings (journal_mode, busy_timeout...). */
  pragma(text: string): void;
  prepare(sql: string): SqliteStatement;
  /** `fn` wrapped in BEGIN/COMMIT (SAVEPOINT when nested), rolled back if it throws, as better-sqlite3's. */
  transaction<T>(fn: () => T): () => T;
  close(): void;
}

export type SqliteDriverName = 'node:sqlite' | 'better-sqlite3';

/** Opens (creating) the database file with the driver this Node has; KERNELHOP_SQLITE=better-sqlite3 forces the addon. */
export function openSqlite(file: string): SqliteDatabase {
  const forced = process.env.KERNELHOP_SQLITE;
  if (forced !== undefined && forced !== '' && forced !== 'node:sqlite' && forced !== 'better-sqlite3') {
    throw new Error(`KERNELHOP_SQLITE=${forced} is not "node:sqlite" or "better-sqlite3"`);
  }
  const builtin = forced === 'better-sqlite3' ? undefined : Private.builtin();
  if (builtin !== undefined) return new Private.BuiltinDatabase(new builtin.DatabaseSync(file));
  if (forced === 'node:sqlite') throw new Error(`KERNELHOP_SQLITE=node:sqlite, but Node ${process.version} has no node:sqlite`);
  let addon: Private.BetterSqlite3Constructor;
  try {
    addon = require('better-sqlite3') as Private.BetterSqlite3Constructor;
  } catch (e) {
    throw new Error(
      `Node ${process.version} has no node:sqlite (Node 22.13 or newer has) and better-sqlite3 cannot be loaded ` +
        `(${(e as Error).message.split('\n')[0]}): run the gateway with a newer Node, or from a checkout after npm ci`,
    );
  }
  return new Private.AddonDatabase(new addon(file));
}

/**
 * The gateway's kernelhop.db as each of its stores opens it: WAL, so their connections read while one writes, and a
 * busy timeout, so they wait their turn instead of failing. A store wanting a stricter `synchronous` sets it after.
 */
export function openGatewayDb(file: string): SqliteDatabase {
  const db = openSqlite(file);
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  return db;
}

namespace Private {
  // node:sqlite's types come with @types/node 22+, and this project builds against Node 20's: the part used, by hand.
  interface BuiltinStatement {
    run(...params: SqliteParams): { changes: number };
    get(...params: SqliteParams): unknown;
    all(...params: SqliteParams): unknown[];
  }
  interface BuiltinModule {
    DatabaseSync: new (file: string) => {
      exec(sql: string): void;
      prepare(sql: string): BuiltinStatement;
      close(): void;
    };
  }

  interface AddonStatement extends BuiltinStatement {
    pluck(on?: boolean): AddonStatement;
  }
  interface AddonHandle {
    readonly open: boolean;
    exec(sql: string): void;
    pragma(text: string): unknown;
    prepare(sql: string): AddonStatement;
    transaction<T>(fn: () => T): () => T;
    close(): void;
  }
  export type BetterSqlite3Constructor = new (file: string) => AddonHandle;

  export function builtin(): BuiltinModule | undefined {
    // process.getBuiltinModule (Node 22.3+) answers undefined for a module this Node lacks, where require throws.
    const get = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;
    return get?.call(process, 'node:sqlite') as BuiltinModule | undefined;
  }

  class BuiltinStatementView implements SqliteStatement {
    constructor(
      private readonly statement: BuiltinStatement,
      private readonly firstColumn: boolean,
    ) {}

    run(...params: SqliteParams): { changes: number } {
      return this.statement.run(...params);
    }

    get(...params: SqliteParams): unknown {
      const row = this.statement.get(...params);
      return this.firstColumn && row !== undefined ? Object.values(row as object)[0] : row;
    }

    all(...params: SqliteParams): unknown[] {
      const rows = this.statement.all(...params);
      return this.firstColumn ? rows.map((row) => Object.values(row as object)[0]) : rows;
    }

    pluck(): SqliteStatement {
      return new BuiltinStatementView(this.statement, true);
    }
  }

  export class BuiltinDatabase implements SqliteDatabase {
    readonly driver = 'node:sqlite';
    private isOpen = true;
    private depth = 0;

    constructor(private readonly handle: InstanceType<BuiltinModule['DatabaseSync']>) {}

    get open(): boolean {
      return this.isOpen;
    }

    exec(sql: string): void {
      this.handle.exec(sql);
    }

    pragma(text: string): void {
      this.handle.exec(`PRAGMA ${text}`);
    }

    prepare(sql: string): SqliteStatement {
      return new BuiltinStatementView(this.handle.prepare(sql), false);
    }

    transaction<T>(fn: () => T): () => T {
      return () => {
        // Nested calls become savepoints, as in better-sqlite3, so a store method may call another inside its own.
        const savepoint = `kernelhop_${this.depth}`;
        this.handle.exec(this.depth === 0 ? 'BEGIN' : `SAVEPOINT ${savepoint}`);
        this.depth += 1;
        try {
          const result = fn();
          this.depth -= 1;
          this.handle.exec(this.depth === 0 ? 'COMMIT' : `RELEASE ${savepoint}`);
          return result;
        } catch (e) {
          this.depth -= 1;
          this.handle.exec(this.depth === 0 ? 'ROLLBACK' : `ROLLBACK TO ${savepoint}; RELEASE ${savepoint}`);
          throw e;
        }
      };
    }

    close(): void {
      this.handle.close();
      this.isOpen = false;
    }
  }

  class AddonStatementView implements SqliteStatement {
    constructor(private readonly statement: AddonStatement) {}

    run(...params: SqliteParams): { changes: number } {
      return this.statement.run(...params);
    }

    get(...params: SqliteParams): unknown {
      return this.statement.get(...params);
    }

    all(...params: SqliteParams): unknown[] {
      return this.statement.all(...params);
    }

    pluck(): SqliteStatement {
      return new AddonStatementView(this.statement.pluck());
    }
  }

  export class AddonDatabase implements SqliteDatabase {
    readonly driver = 'better-sqlite3';

    constructor(private readonly handle: AddonHandle) {}

    get open(): boolean {
      return this.handle.open;
    }

    exec(sql: string): void {
      this.handle.exec(sql);
    }

    pragma(text: string): void {
      this.handle.pragma(text);
    }

    prepare(sql: string): SqliteStatement {
      return new AddonStatementView(this.handle.prepare(sql));
    }

    transaction<T>(fn: () => T): () => T {
      return this.handle.transaction(fn);
    }

    close(): void {
      this.handle.close();
    }
  }
}
