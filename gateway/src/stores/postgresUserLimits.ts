// User limits in PostgreSQL. The scheduler reads them synchronously on every decision, so they are kept in memory as
// SQLite's are; a change made by any gateway on the database reaches every other one by LISTEN/NOTIFY (set() notifies
// in its own transaction, so the notice goes out only once the change is committed). The listening connection is
// remade when lost, with the whole table read again after its LISTEN, so a change missed meanwhile is not missed.
import pg from 'pg';
import { Log } from '../log.js';
import { UserLimits } from '../runs/userLimits.js';
import { inTransaction, types } from './postgres.js';

export const USER_LIMITS_CHANNEL = 'kernelhop_user_limits';
/** How the listener waits between attempts to reconnect: doubling from the first to the last. */
const RETRY_MS = { first: 250, last: 10_000 };

export class PostgresUserLimits implements UserLimits {
  private readonly cache = new Map<string, number>();
  private listener: pg.Client | undefined;
  private closed = false;
  private retryMs = RETRY_MS.first;
  private retry: NodeJS.Timeout | undefined;
  private reloading: Promise<void> | undefined;
  private reloadAgain = false;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly url: string,
    private readonly log: Log,
  ) {}

  /** Reads the limits and starts listening; fails when the database does not answer. `pool` stays the caller's. */
  static async open(pool: pg.Pool, url: string, log: Log = () => undefined): Promise<PostgresUserLimits> {
    const limits = new PostgresUserLimits(pool, url, log);
    await limits.listen();
    return limits;
  }

  slots(user: string): number {
    return this.cache.get(user) ?? Infinity;
  }

  async set(user: string, slots: number | null): Promise<void> {
    await inTransaction(this.pool, async (c) => {
      if (slots === null) await c.query('DELETE FROM user_limits WHERE "user" = $1', [user]);
      else await c.query('INSERT INTO user_limits ("user", slots) VALUES ($1, $2) ON CONFLICT ("user") DO UPDATE SET slots = excluded.slots', [user, slots]);
      await c.query('SELECT pg_notify($1, $2)', [USER_LIMITS_CHANNEL, user]);
    });
    if (slots === null) this.cache.delete(user);
    else this.cache.set(user, slots);
  }

  list(): Array<{ user: string; slots: number }> {
    return [...this.cache].map(([user, slots]) => ({ user, slots })).sort((a, b) => a.user.localeCompare(b.user));
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    const listener = this.listener;
    this.listener = undefined;
    await listener?.end().catch(() => undefined);
    await this.reloading?.catch(() => undefined);
  }

  private async listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, types, application_name: 'kernelhop-user-limits', connectionTimeoutMillis: 10_000 });
    client.on('error', () => this.lost(client));
    client.on('end', () => this.lost(client));
    client.on('notification', () => {
      this.reload().catch((e: unknown) => {
        this.log(`reading user limits after a change failed: ${String(e)}; listening again`);
        this.lost(client);
      });
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${USER_LIMITS_CHANNEL}`);
      if (this.closed) throw new Error('closed');
      this.listener = client;
      // After LISTEN: a change committed from now on is notified, one committed before is in what this reads.
      await this.reload();
    } catch (e) {
      if (this.listener === client) this.listener = undefined;
      await client.end().catch(() => undefined);
      throw e;
    }
  }

  /** The listening connection failed or ended: listen again, after a pause that grows while it keeps failing. */
  private lost(client: pg.Client): void {
    if (this.closed || this.listener !== client) return;
    this.listener = undefined;
    client.end().catch(() => undefined);
    this.log(`the user limits listener lost its connection; reconnecting`);
    this.reconnect();
  }

  private reconnect(): void {
    this.retry = setTimeout(() => {
      this.listen().then(
        () => {
          this.retryMs = RETRY_MS.first;
          this.log('the user limits listener is back; limits read again');
        },
        (e: unknown) => {
          if (this.closed) return;
          this.retryMs = Math.min(this.retryMs * 2, RETRY_MS.last);
          this.log(`the user limits listener cannot reconnect (${String((e as Error).message ?? e)}); trying again in ${this.retryMs} ms`);
          this.reconnect();
        },
      );
    }, this.retryMs);
    this.retry.unref();
  }

  /** Reads the whole table into the cache; one read at a time, and one more when asked during it. */
  private reload(): Promise<void> {
    if (this.reloading !== undefined) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = (async () => {
      try {
        do {
          this.reloadAgain = false;
          const { rows } = await this.pool.query<{ user: string; slots: number }>('SELECT "user", slots FROM user_limits');
          this.cache.clear();
          for (const r of rows) this.cache.set(r.user, r.slots);
        } while (this.reloadAgain && !this.closed);
      } finally {
        this.reloading = undefined;
      }
    })();
    return this.reloading;
  }
}
