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
}

export const DEFAULT_HALF_LIFE_S = 3600;

export class FairShare {
  private readonly accounts = new Map<string, Account>();
  private readonly listeners: Array<(usage: RunUsage) => void> = [];

  constructor(
    private readonly clock: Clock,
    private readonly halfLifeS = DEFAULT_HALF_LIFE_S,
  ) {}

  /** Called for every run's slot time once its slot is released (usage records, metrics). */
  subscribe(listener: (usage: RunUsage) => void): void {
    this.listeners.push(listener);
  }

  onRunStart(user: string, startedAt: number): void {
    const a = this.account(user);
    a.running += 1;
    a.starts += startedAt;
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
    this.decay(a);
    a.decayed += usage.gpuSeconds;
    for (const l of this.listeners) l(usage);
  }

  /** The user's recent GPU-seconds now: ended runs decayed by age, plus the runs in flight so far. */
  usage(user: string): number {
    const a = this.accounts.get(user);
    if (a === undefined) return 0;
    const now = this.clock.now();
    const decayed = a.decayed * 2 ** (-(now - a.at) / 1000 / this.halfLifeS);
    return decayed + (a.running * now - a.starts) / 1000;
  }

  private decay(a: Account): void {
    const now = this.clock.now();
    a.decayed *= 2 ** (-(now - a.at) / 1000 / this.halfLifeS);
    a.at = now;
  }

  private account(user: string): Account {
    let a = this.accounts.get(user);
    if (a === undefined) {
      a = { decayed: 0, at: this.clock.now(), running: 0, starts: 0 };
      this.accounts.set(user, a);
    }
    return a;
  }
}
