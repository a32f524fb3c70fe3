// Who has used the pool lately: each user's GPU-seconds, decaying with a half-life (Slurm's fair-share usage),
// plus the seconds its runs in flight have held so far. The queue serves the user with the least first.
import type { Clock } from './clock.js';

/** One run's slot time, when its slot is released: what usage counting and metrics hook into. */
export interface RunUsage {
  user: string;
  gpuClass: string;
  runtime: string;
  gpuSeconds: number;
}

interface Account {
  /** Decayed GPU-seconds of ended runs, as of `at`. */
  decayed: number;
  at: number;
  /** Runs holding a slot now, and the sum of their start times (ms): their accrual is running·now − starts. */
  running: number;
  starts: number;
  /** Bumped at every run start and end: a usage computed before is stale. */
  version: number;
}

export const DEFAULT_HALF_LIFE_S = 3600;

export class FairShare {
  private readonly accounts = new Map<string, Account>();
  private readonly listeners: Array<(usage: RunUsage) => void> = [];
  /** Origin of `key`, so its numbers stay small (and exact to ~1e-12) for years of uptime. */
  private readonly epoch: number;

  constructor(
    private readonly clock: Clock,
    private readonly halfLifeS = DEFAULT_HALF_LIFE_S,
  ) {
    this.epoch = clock.now();
  }

  /** Called for every run's slot time once its slot is released (usage records, metrics). */
  subscribe(listener: (usage: RunUsage) => void): void {
    this.listeners.push(listener);
  }

  onRunStart(user: string, startedAt: number): void {
    const a = this.account(user);
    a.running += 1;
    a.starts += startedAt;
    a.version += 1;
  }

  /** A run that started at `startedAt` did not run after all (its runtime refused it): nothing is counted. */
  onRunUndone(user: string, startedAt: number): void {
    const a = this.account(user);
    a.running -= 1;
    a.starts -= startedAt;
  }

  onRunEnd(usage: RunUsage, startedAt: number): void {
    const a = this.account(usage.user);
    a.running -= 1;
    a.starts -= startedAt;
    a.version += 1;
    this.decay(a);
    a.decayed += usage.gpuSeconds;
    for (const l of this.listeners) l(usage);
  }

  /** The user's recent GPU-seconds at `now`: ended runs decayed by age, plus the runs in flight so far. */
  usage(user: string, now = this.clock.now()): number {
    const a = this.accounts.get(user);
    if (a === undefined) return 0;
    const decayed = a.decayed * 2 ** (-(now - a.at) / 1000 / this.halfLifeS);
    return decayed + (a.running * now - a.starts) / 1000;
  }

  /** Changes whenever the user's runs start or end; -1 for a user never seen. */
  version(user: string): number {
    return this.accounts.get(user)?.version ?? -1;
  }

  /**
   * A key whose order is the order of usage at `now`, and which stays a lower bound of that order later: usage
   * decays by the same factor for everyone and grows only with runs in flight, so log2(usage(t)) + t / half-life
   * (ms, from the epoch) never falls below its value at `now`. The ordered index below keys users by it.
   */
  key(usage: number, now: number): number {
    return usage > 0 ? Math.log2(usage) + (now - this.epoch) / 1000 / this.halfLifeS : -Infinity;
  }

  private decay(a: Account): void {
    const now = this.clock.now();
    a.decayed *= 2 ** (-(now - a.at) / 1000 / this.halfLifeS);
    a.at = now;
  }

  private account(user: string): Account {
    let a = this.accounts.get(user);
    if (a === undefined) {
      a = { decayed: 0, at: this.clock.now(), running: 0, starts: 0, version: 0 };
      this.accounts.set(user, a);
    }
    return a;
  }
}

/** A waiting user in a `UsageOrder`. */
interface Entry {
  user: string;
  /** The place in line (`Job.seq`) of the user's first waiting run: equal usage goes to who asked first. */
  head: number;
  /** `FairShare.key` when `usage` was computed: a lower bound of the key at any later time. */
  key: number;
  usage: number;
  /** The clock and account version `usage` was computed at: exact while both still hold. */
  at: number;
  version: number;
  index: number;
}

/** Keys this close to the first one may hide, behind rounding, a smaller usage: their usage itself is compared. */
const NEAR = 1e-9;

/**
 * The waiting users of one class in fair-share order (least recent GPU-seconds first, then the earliest head), as a
 * binary heap on `FairShare.key`. Keys only ever under-estimate later (see `key`), so taking the first at a time is
 * lazy: a stale first entry is re-keyed at that time and sinks to its place, until the first one is exact. Each
 * decision re-keys only the users whose runs in flight moved them, not every waiting user.
 */
export class UsageOrder {
  private readonly heap: Entry[] = [];
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly fairShare: FairShare) {}

  get size(): number {
    return this.heap.length;
  }

  has(user: string): boolean {
    return this.entries.has(user);
  }

  /** Puts `user` in the order with its first waiting run's `head`, or moves its head. */
  set(user: string, head: number, now: number): void {
    const e = this.entries.get(user);
    if (e !== undefined) {
      e.head = head;
      this.fix(e.index);
      return;
    }
    const entry: Entry = { user, head, key: 0, usage: 0, at: 0, version: 0, index: this.heap.length };
    this.rekey(entry, now);
    this.entries.set(user, entry);
    this.heap.push(entry);
    this.up(entry.index);
  }

  delete(user: string): void {
    const e = this.entries.get(user);
    if (e === undefined) return;
    this.entries.delete(user);
    const last = this.heap.pop() as Entry;
    if (last === e) return;
    this.heap[e.index] = last;
    last.index = e.index;
    this.fix(last.index);
  }

  clear(): void {
    this.heap.length = 0;
    this.entries.clear();
  }

  /** Takes the first user in the order at `now` out of it. */
  shift(now: number): string | undefined {
    const h = this.heap;
    for (let top = h[0]; top !== undefined && !this.fresh(top, now); top = h[0]) {
      this.rekey(top, now);
      this.down(0);
    }
    let best = h[0];
    if (best === undefined) return undefined;
    // Usage 0 (key -Infinity) is exact and least: the earliest head among them is first.
    if (best.key !== -Infinity) {
      const near: Entry[] = [];
      this.collect(0, best.key + NEAR, near);
      for (const e of near) {
        if (!this.fresh(e, now)) {
          this.rekey(e, now);
          this.fix(e.index);
        }
        if (before(e, best)) best = e;
      }
    }
    this.delete(best.user);
    return best.user;
  }

  private fresh(e: Entry, now: number): boolean {
    return e.at === now && e.version === this.fairShare.version(e.user);
  }

  private rekey(e: Entry, now: number): void {
    e.usage = this.fairShare.usage(e.user, now);
    e.key = this.fairShare.key(e.usage, now);
    e.at = now;
    e.version = this.fairShare.version(e.user);
  }

  /** Every entry whose key is at most `bound` (a subtree whose root is above it holds none). */
  private collect(i: number, bound: number, out: Entry[]): void {
    const e = this.heap[i];
    if (e === undefined || e.key > bound) return;
    out.push(e);
    this.collect(2 * i + 1, bound, out);
    this.collect(2 * i + 2, bound, out);
  }

  private less(i: number, j: number): boolean {
    const a = this.heap[i] as Entry;
    const b = this.heap[j] as Entry;
    return a.key < b.key || (a.key === b.key && a.head < b.head);
  }

  private fix(i: number): void {
    if (i > 0 && this.less(i, (i - 1) >> 1)) this.up(i);
    else this.down(i);
  }

  private up(i: number): void {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) return;
      this.swap(i, p);
      i = p;
    }
  }

  private down(i: number): void {
    const n = this.heap.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.less(l, m)) m = l;
      if (r < n && this.less(r, m)) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(i: number, j: number): void {
    const a = this.heap[i] as Entry;
    const b = this.heap[j] as Entry;
    this.heap[i] = b;
    this.heap[j] = a;
    a.index = j;
    b.index = i;
  }
}

/** The fair-share comparison itself, on usage computed at one time: less usage first, then the earlier head. */
function before(a: Entry, b: Entry): boolean {
  return a.usage < b.usage || (a.usage === b.usage && a.head < b.head);
}
