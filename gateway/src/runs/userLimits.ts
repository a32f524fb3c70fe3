// Per-user limits on slots held at once (`kernelhop user limit NAME --slots N`), in the metadata database.
// Read on every scheduling decision, so kept in memory too; the table is the truth across restarts.
import { SqliteDatabase, openGatewayDb } from '../sqlite.js';
import { migrateSqlite } from '../stores/migrations/index.js';

export interface UserLimits {
  /** Slots `user` may hold at once (running or warm); Infinity when no limit is set. */
  slots(user: string): number;
  /** Sets the limit; null removes it. */
  set(user: string, slots: number | null): Promise<void>;
  list(): Array<{ user: string; slots: number }>;
  close(): Promise<void>;
}

export class SqliteUserLimits implements UserLimits {
  private readonly db: SqliteDatabase;
  private readonly cache = new Map<string, number>();

  constructor(file: string) {
    this.db = openGatewayDb(file);
    migrateSqlite(this.db, file);
    for (const r of this.db.prepare('SELECT user, slots FROM user_limits').all() as Array<{ user: string; slots: number }>) {
      this.cache.set(r.user, r.slots);
    }
  }

  slots(user: string): number {
    return this.cache.get(user) ?? Infinity;
  }

  async set(user: string, slots: number | null): Promise<void> {
    if (slots === null) {
      this.db.prepare('DELETE FROM user_limits WHERE user = ?').run(user);
      this.cache.delete(user);
      return;
    }
    this.db.prepare('INSERT INTO user_limits (user, slots) VALUES (?, ?) ON CONFLICT (user) DO UPDATE SET slots = excluded.slots').run(user, slots);
    this.cache.set(user, slots);
  }

  list(): Array<{ user: string; slots: number }> {
    return [...this.cache].map(([user, slots]) => ({ user, slots })).sort((a, b) => a.user.localeCompare(b.user));
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
