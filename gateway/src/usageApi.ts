// The `usage` op of the WebSocket API: GPU-seconds as usage.ts counts them. A user sees its own; the admin anyone's.
import { OpError } from './snapshotApi.js';
import type { User } from './snapshotStore.js';
import type { UsageLedger, UsageReport } from './usage.js';

export const USAGE_OPS = ['usage'] as const;

export function isUsageOp(op: string): op is (typeof USAGE_OPS)[number] {
  return (USAGE_OPS as readonly string[]).includes(op);
}

/** `{op: "usage", user?: NAME, since?: ms since the epoch}`; a non-admin's report is always its own. */
export async function usageOp(ledger: UsageLedger, caller: User, req: Record<string, unknown>): Promise<{ usage: UsageReport }> {
  const { user, since } = req;
  if (user !== undefined && user !== null && typeof user !== 'string') {
    throw new OpError('bad_request', 'usage: "user" must be a user name');
  }
  if (since !== undefined && since !== null && !(typeof since === 'number' && Number.isFinite(since) && since >= 0)) {
    throw new OpError('bad_request', 'usage: "since" must be a time in milliseconds since the epoch');
  }
  let who = typeof user === 'string' ? user : undefined;
  if (!caller.admin) {
    if (who !== undefined && who !== caller.name) {
      throw new OpError('forbidden', `usage of user ${JSON.stringify(who)} is for the admin; you may see your own`);
    }
    who = caller.name;
  }
  return { usage: await ledger.report({ user: who, since: typeof since === 'number' ? since : undefined }) };
}
