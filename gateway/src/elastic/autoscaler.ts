// Elastic runtimes (ARCHITECTURE.md, "Elastic runtimes"): when runs of a class have waited longer than a bound, ask
// the provider for a runtime of that class; release a provided runtime once it has been idle longer than a bound;
// with nothing waiting, that scales to zero. Each provided runtime gets a runtime token of its own class that may
// register one runtime once, revoked when it is released.
import type { Log } from '../log.js';
import type { Clock, Timer } from '../runs/clock.js';
import type { RuntimeTokenStore } from '../runtimeTokens.js';
import type { ClassInfo, RuntimeLoad } from '../scheduler.js';
import { ProvidedRuntime, RuntimeProvider } from './provider.js';

/** After a provided runtime failed to come up, the provider is asked again for its class only this much later. */
const DEFAULT_RETRY_MS = 30_000;

export interface AutoscalerOptions {
  provider: RuntimeProvider;
  /** The classes the provider can start runtimes of. */
  classes: readonly string[];
  /** Where provided runtimes reach the gateway's gRPC API. */
  gateway: string;
  /** A run waiting this long asks for a runtime. */
  scaleUpAfterMs: number;
  /** A provided runtime holding no run this long is released. */
  idleReleaseMs: number;
  /** At most this many provided runtimes per class, starting or up. */
  maxPerClass: number;
  /** A provided runtime not registered this long after it was asked for is released. */
  registerTimeoutMs: number;
  /** After the provider failed for a class, wait this long before asking it again. */
  retryAfterMs?: number;
  /**
   * Keep the class's slots at (running + waiting) / this, asking ahead of waits and releasing an idle runtime only
   * when the rest still meet it (`--target-utilization`); unset: only runs that waited ask, and idleness releases.
   */
  targetUtilization?: number;
  tickMs?: number;
  /** Ticks on this clock instead of the system's (the pool simulator's simulated time). */
  clock?: Clock;
}

/** What the autoscaler needs of the scheduler. */
export interface PoolState {
  waiting(): Map<string, number[]>;
  classes(): Record<string, ClassInfo>;
  drain(runtimeId: string, draining: boolean): void;
  runtimesOf(credential: string): RuntimeLoad[];
  dropRuntimesOf(credential: string, reason: string): number;
}

interface Provisioned {
  gpuClass: string;
  name: string;
  credentialId: string;
  requestedAt: number;
  /** Set once its token registered a runtime: it may not register another. */
  admitted: boolean;
  /** Set once its runtime was seen registered. */
  up: boolean;
  /** Drained (under a target): no run is placed on it; released once it runs nothing, or taken back into use. */
  draining: boolean;
  provided?: ProvidedRuntime;
  releasing?: Promise<void>;
}

export class Autoscaler {
  private readonly provisioned = new Map<string, Provisioned>();
  private readonly retryAt = new Map<string, number>();
  /** Per class, runtimes asked for whose token is still being made: not in `provisioned` yet, but on their way. */
  private readonly starting = new Map<string, number>();
  /** Slots per runtime of each class, as its runtimes registered: how many waiting runs one more takes. */
  private readonly slotsPer = new Map<string, number>();
  /** Per class, [time, slots wanted] over the last --idle-release, decreasing in slots: its first is the peak. */
  private readonly recent = new Map<string, Array<[number, number]>>();
  private readonly timer: NodeJS.Timeout | null = null;
  private tickTimer: Timer | null = null;
  private seq = 0;
  private closed = false;

  constructor(
    private readonly opts: AutoscalerOptions,
    private readonly pool: PoolState,
    private readonly tokens: RuntimeTokenStore,
    private readonly log: Log,
    private readonly now: () => number = opts.clock !== undefined ? () => (opts.clock as Clock).now() : Date.now,
  ) {
    const tickMs = opts.tickMs ?? 1000;
    const clock = opts.clock;
    if (clock !== undefined) {
      const next = (): void => {
        this.tickTimer = clock.after(tickMs, () => {
          this.tick();
          if (!this.closed) next();
        });
      };
      next();
    } else {
      this.timer = setInterval(() => this.tick(), tickMs);
      this.timer.unref();
    }
  }

  /** For the scheduler's registration: a provided runtime's token registers one runtime, once. */
  admitRegistration(credentialId: string): string | null {
    const p = this.provisioned.get(credentialId);
    if (p === undefined) return null;
    if (p.admitted || p.releasing !== undefined) {
      return `this runtime token was made for one provided runtime (${p.name}), which registered already or was released; the autoscaler starts runtimes with tokens of their own`;
    }
    p.admitted = true;
    return null;
  }

  /** Provided runtimes per class and state, for /metrics and the log. */
  counts(): Array<{ gpuClass: string; state: 'starting' | 'up'; n: number }> {
    const out = new Map<string, number>();
    for (const p of this.provisioned.values()) {
      const key = `${p.gpuClass}\0${p.up ? 'up' : 'starting'}`;
      out.set(key, (out.get(key) ?? 0) + 1);
    }
    return [...out].map(([key, n]) => {
      const [gpuClass, state] = key.split('\0');
      return { gpuClass, state: state as 'starting' | 'up', n };
    });
  }

  tick(): void {
    if (this.closed) return;
    const now = this.now();
    const target = this.opts.targetUtilization;
    const classes = target === undefined ? {} : this.pool.classes();
    /** Slots the class should have now under the target (0 without one). */
    const wanted = (gpuClass: string): number => {
      const info = classes[gpuClass];
      return target === undefined || info === undefined ? 0 : Math.ceil((info.busy + info.queued) / target);
    };
    // Growing follows the target now; shrinking the most it asked for over the last --idle-release, so a dip of a
    // few minutes does not let a host go that the next minutes boot again.
    const spare = new Map<string, number>();
    for (const c of this.opts.classes) spare.set(c, (classes[c]?.capacity ?? 0) - wanted(c));
    const keep = new Map<string, number>();
    if (target !== undefined) for (const c of this.opts.classes) keep.set(c, this.recentPeak(c, wanted(c), now));
    const loads = new Map<Provisioned, RuntimeLoad[]>();
    for (const p of this.provisioned.values()) {
      const l = this.pool.runtimesOf(p.credentialId);
      loads.set(p, l);
      if (p.draining) spare.set(p.gpuClass, (spare.get(p.gpuClass) ?? 0) - l.reduce((n, x) => n + x.slots, 0));
    }
    for (const p of this.provisioned.values()) this.check(p, now, spare, loads.get(p) ?? []);
    if (target !== undefined) for (const c of this.opts.classes) this.rebalance(c, spare, (keep.get(c) ?? 0) - wanted(c), loads);
    const waiting = this.pool.waiting();
    for (const gpuClass of this.opts.classes) {
      if ((this.retryAt.get(gpuClass) ?? 0) > now) continue;
      const longWaits = (waiting.get(gpuClass) ?? []).filter((t) => now - t >= this.opts.scaleUpAfterMs).length;
      const ofClass = [...this.provisioned.values()].filter((p) => p.gpuClass === gpuClass && p.releasing === undefined);
      // A runtime on its way takes as many of the waiting runs as it has slots (one until one has registered).
      const starting = this.starting.get(gpuClass) ?? 0;
      const coming = ofClass.filter((p) => !p.up).length + starting;
      const per = this.slotsPer.get(gpuClass) ?? 1;
      let need = Math.ceil(longWaits / per) - coming;
      // Under a target, the runtimes to add before anyone waits: the slots short of it, less those on their way.
      if (target !== undefined) need = Math.max(need, Math.ceil((-(spare.get(gpuClass) ?? 0) - coming * per) / per));
      let room = this.opts.maxPerClass - ofClass.length - starting;
      while (need > 0 && room > 0) {
        this.provision(gpuClass, now).catch((e: unknown) => this.log(`could not ask for a runtime of class ${gpuClass}: ${String(e)}`));
        need -= 1;
        room -= 1;
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.tickTimer?.cancel();
    await Promise.all([...this.provisioned.values()].map((p) => this.release(p, 'the gateway is stopping')));
  }

  /**
   * Under a target: a class short of it takes drained runtimes back first (no boot); one a whole runtime above it
   * drains its least busy provided runtimes, which go once their cells are done.
   */
  private rebalance(gpuClass: string, spare: Map<string, number>, recentExtra: number, loads: Map<Provisioned, RuntimeLoad[]>): void {
    const slotsOf = (p: Provisioned): number => (loads.get(p) ?? []).reduce((n, l) => n + l.slots, 0);
    const busyOf = (p: Provisioned): number => (loads.get(p) ?? []).reduce((n, l) => n + l.busy, 0);
    const ofClass = [...this.provisioned.values()].filter((p) => p.gpuClass === gpuClass && p.up && p.releasing === undefined);
    const set = (p: Provisioned, draining: boolean): void => {
      p.draining = draining;
      for (const l of loads.get(p) ?? []) this.pool.drain(l.id, draining);
      spare.set(gpuClass, (spare.get(gpuClass) ?? 0) + (draining ? -slotsOf(p) : slotsOf(p)));
    };
    // The busiest drained runtimes first: they would take longest to empty.
    for (const p of ofClass.filter((x) => x.draining).sort((a, b) => busyOf(b) - busyOf(a))) {
      if ((spare.get(gpuClass) ?? 0) >= 0) break;
      set(p, false);
    }
    for (const p of ofClass.filter((x) => !x.draining).sort((a, b) => busyOf(a) - busyOf(b))) {
      if ((spare.get(gpuClass) ?? 0) - recentExtra < slotsOf(p)) break;
      set(p, true);
    }
  }

  /** The most slots the class wanted over the last --idle-release, `wanted` now included. */
  private recentPeak(gpuClass: string, wanted: number, now: number): number {
    const window = this.recent.get(gpuClass) ?? [];
    this.recent.set(gpuClass, window);
    // Kept decreasing in `wanted`: an entry below a later one can never be the peak again.
    while (window.length > 0 && (window[window.length - 1] as [number, number])[1] <= wanted) window.pop();
    window.push([now, wanted]);
    while ((window[0] as [number, number])[0] < now - this.opts.idleReleaseMs) window.shift();
    return (window[0] as [number, number])[1];
  }

  /** `spare`: per class, the slots above the target (kept up to date as runtimes are released). */
  private check(p: Provisioned, now: number, spare: Map<string, number>, loads: RuntimeLoad[]): void {
    if (p.releasing !== undefined || p.provided === undefined) return;
    if (loads.length > 0) {
      p.up = true;
      if (p.draining) {
        if (loads.every((l) => l.busy === 0)) void this.release(p, 'drained: the class is above its target without it');
        return;
      }
      const slots = loads.reduce((n, l) => n + l.slots, 0);
      this.slotsPer.set(p.gpuClass, Math.max(this.slotsPer.get(p.gpuClass) ?? 1, slots));
      const idle = loads.every((l) => l.idleSince !== null && now - l.idleSince >= this.opts.idleReleaseMs);
      // Under a target an idle runtime goes only if the rest still meet it: else it would be asked for again at once.
      const surplus = this.opts.targetUtilization === undefined || (spare.get(p.gpuClass) ?? 0) >= slots;
      if (idle && surplus) {
        spare.set(p.gpuClass, (spare.get(p.gpuClass) ?? 0) - slots);
        void this.release(p, `idle for ${Math.round(this.opts.idleReleaseMs / 1000)} s`);
      }
      return;
    }
    if (p.up) void this.release(p, 'its runtime left the gateway');
    else if (now - p.requestedAt >= this.opts.registerTimeoutMs) {
      void this.release(p, `it did not register within ${Math.round(this.opts.registerTimeoutMs / 1000)} s`);
    }
  }

  private async provision(gpuClass: string, now: number): Promise<void> {
    const name = `${gpuClass}-elastic-${++this.seq}`;
    this.starting.set(gpuClass, (this.starting.get(gpuClass) ?? 0) + 1);
    let made: Awaited<ReturnType<RuntimeTokenStore['create']>>;
    try {
      made = await this.tokens.create(gpuClass, now);
    } finally {
      this.starting.set(gpuClass, (this.starting.get(gpuClass) ?? 1) - 1);
    }
    const { credential, token } = made;
    const p: Provisioned = { gpuClass, name, credentialId: credential.id, requestedAt: now, admitted: false, up: false, draining: false };
    this.provisioned.set(credential.id, p);
    this.log(`asking the ${this.opts.provider.kind} provider for a runtime of class ${gpuClass}`, { runtime: name });
    try {
      p.provided = await this.opts.provider.provide({ gpuClass, name, gateway: this.opts.gateway, enrollmentToken: token });
    } catch (e) {
      this.log(`the ${this.opts.provider.kind} provider could not start a runtime of class ${gpuClass}: ${String(e)}`, { runtime: name });
      await this.release(p, 'the provider failed');
      return;
    }
    if (p.releasing !== undefined) {
      // Released while the provider was starting it (the gateway is stopping).
      await p.provided.release();
      return;
    }
    void p.provided.ended.then(() => {
      if (p.releasing === undefined) void this.release(p, 'it ended by itself');
    });
  }

  private release(p: Provisioned, why: string): Promise<void> {
    return (p.releasing ??= (async () => {
      this.log(`releasing provided runtime: ${why}`, { runtime: p.name });
      // One that never came up would be asked for again at once, and fail again: back off.
      if (!p.up) this.retryAt.set(p.gpuClass, this.now() + (this.opts.retryAfterMs ?? DEFAULT_RETRY_MS));
      this.pool.dropRuntimesOf(p.credentialId, `released by the autoscaler: ${why}`);
      await this.tokens.revoke(p.credentialId, this.now()).catch(() => false);
      await p.provided?.release().catch((e: unknown) => this.log(`releasing failed: ${String(e)}`, { runtime: p.name }));
      this.provisioned.delete(p.credentialId);
    })());
  }
}
