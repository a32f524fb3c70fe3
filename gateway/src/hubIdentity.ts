// Users from JupyterHub: a token the gateway does not know is asked about at the Hub (GET /hub/api/user with that
// token), and the Hub's answer names the kernelhop user and whether it is an admin. A user's kernel sends the
// JUPYTERHUB_API_TOKEN its server got from the Hub, so nobody runs `kernelhop user add`. Answers are cached briefly:
// a token the Hub revoked keeps working here for at most CACHE_MS.
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { SnapshotStore, User } from './snapshotStore.js';

const CACHE_MS = 30_000;
const ASK_TIMEOUT_MS = 5_000;
/** kernelhop's own rule for user names (snapshotApi.ts). */
const USER_NAME = /^[a-z][a-z0-9_.-]{0,31}$/;

export interface HubIdentityOptions {
  /** The Hub's API, e.g. http://127.0.0.1:8081/hub/api (JUPYTERHUB_API_URL when run as a Hub service). */
  apiUrl: string;
  snapshots: SnapshotStore;
  /** The gateway's own admin user: a Hub user of that name gets it only when the Hub says it is an admin. */
  adminUser: string;
  log: (line: string) => void;
}

interface HubUserModel {
  kind?: unknown;
  name?: unknown;
  admin?: unknown;
}

export class HubIdentity {
  private readonly cache = new LRUCache<string, User>({ max: 10_000, ttl: CACHE_MS });

  constructor(private readonly opts: HubIdentityOptions) {}

  /** The user the Hub says owns `token`; undefined when the Hub does not know it (or it is no user's). */
  async authenticate(token: string): Promise<User | undefined> {
    const key = createHash('sha256').update(token).digest('hex');
    const cached = this.cache.get(key);
    if (cached !== undefined) return cached;
    const model = await this.ask(token);
    if (model === undefined) return undefined;
    const user = await this.userOf(model);
    if (user !== undefined) this.cache.set(key, user);
    return user;
  }

  private async ask(token: string): Promise<HubUserModel | undefined> {
    let res: Response;
    try {
      res = await fetch(`${this.opts.apiUrl.replace(/\/$/, '')}/user`, {
        headers: { Authorization: `token ${token}` },
        signal: AbortSignal.timeout(ASK_TIMEOUT_MS),
      });
    } catch (e) {
      const cause = (e as Error & { cause?: Error }).cause;
      // Said in the log and answered as "cannot check the token" (500), not as a wrong token.
      throw new Error(`cannot ask JupyterHub at ${this.opts.apiUrl}: ${cause?.message ?? (e as Error).message}`);
    }
    if (res.status === 401 || res.status === 403 || res.status === 404) return undefined;
    if (!res.ok) throw new Error(`JupyterHub at ${this.opts.apiUrl} answered HTTP ${res.status} for /user`);
    return (await res.json()) as HubUserModel;
  }

  private async userOf(model: HubUserModel): Promise<User | undefined> {
    // A service's token names a service, not a user: it gets no kernelhop identity.
    if (model.kind !== undefined && model.kind !== 'user') return undefined;
    const name = model.name;
    if (typeof name !== 'string' || !USER_NAME.test(name)) {
      this.opts.log(`JupyterHub user ${JSON.stringify(name)} refused: kernelhop user names are 1-32 of a-z 0-9 _ . - starting with a letter`);
      return undefined;
    }
    const admin = model.admin === true;
    if (name === this.opts.adminUser && !admin) {
      this.opts.log(`JupyterHub user ${name} refused: that is the gateway's admin user, and the Hub does not make it an admin`);
      return undefined;
    }
    let user = await this.opts.snapshots.getUser(name);
    if (user === undefined) {
      // Made on first sight; the kernelhop token this makes is thrown away: the user's credential is the Hub's.
      try {
        await this.opts.snapshots.addUser(name, 0);
      } catch {
        // Made at the same moment by another connection of the same user.
      }
      user = await this.opts.snapshots.getUser(name);
      if (user === undefined) return undefined;
      this.opts.log(`JupyterHub user ${name} seen for the first time: kernelhop user made`);
    }
    // Admin rights are the Hub's, on every check.
    return { ...user, admin };
  }
}
