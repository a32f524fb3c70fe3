// The WebSocket ops over the pool: where a session's cells run (`%gpu`), and per-user slot limits (admins).
import { OpError } from '../snapshotApi.js';
import type { Scheduler } from '../scheduler.js';
import type { SnapshotStore, User } from '../snapshotStore.js';
import type { UserLimits } from './userLimits.js';

export const POOL_OPS = ['session_status', 'user_limit'] as const;
export type PoolOp = (typeof POOL_OPS)[number];

export function isPoolOp(op: string): op is PoolOp {
  return (POOL_OPS as readonly string[]).includes(op);
}

export class PoolOps {
  constructor(
    private readonly scheduler: Scheduler,
    private readonly limits: UserLimits,
    private readonly users: SnapshotStore,
  ) {}

  /** `bind` maps the kernel's session name to the session runtimes see (the ws layer's keyed hash). */
  async handle(user: User, op: PoolOp, req: Record<string, unknown>, bind: (session: string) => string): Promise<Record<string, unknown>> {
    switch (op) {
      case 'session_status': {
        const session = req.session;
        if (typeof session !== 'string' || session === '') throw new OpError('bad_request', 'session_status needs "session": the kernel\'s session');
        return { status: this.scheduler.sessionStatus(bind(session)), warm_grace_s: this.scheduler.warmGraceMs / 1000 };
      }
      case 'user_limit': {
        if (!user.admin) throw new OpError('forbidden', `${op} is for admins`);
        const name = req.name;
        if (name === undefined) return { limits: this.limits.list() };
        if (typeof name !== 'string' || (await this.users.getUser(name)) === undefined) {
          throw new OpError('not_found', `no user ${JSON.stringify(name)}; \`kernelhop user ls\` lists them`);
        }
        const slots = req.slots ?? null;
        if (slots !== null && !(typeof slots === 'number' && Number.isSafeInteger(slots) && slots >= 0)) {
          throw new OpError('bad_request', 'slots must be a whole number of slots, 0 or more, or null to remove the limit');
        }
        await this.limits.set(name, slots as number | null);
        return { user: name, slots };
      }
    }
  }
}
