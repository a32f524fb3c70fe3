// Elastic runtimes (ARCHITECTURE.md, "Elastic runtimes"): when runs of a class have waited longer than a bound, ask
// the provider for a runtime of that class; release a provided runtime once it has been idle longer than a bound;
// with nothing waiting, that scales to zero. Each provided runtime gets a runtime token of its own class that may
// register one runtime once, revoked when it is released.
import type { Log } from '../log.js';
import type { RuntimeTokenStore } from '../runtimeTokens.js';
import type { RuntimeLoad } from '../scheduler.js';
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
  tickMs?: number;
}

/** What the autoscaler needs of the scheduler. */
export interface PoolState {
  waiting(): Map<string, number[]>;
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
  provided?: ProvidedRuntime;
  releasing?: Promise<void>;
}

export class Autoscaler {
  private readonly provisioned = new Map<string, Provisioned>();
  private readonly retryAt = new Map<string, number>();
  /** Per class, runtimes asked for whose token is still being made: not in `provisioned` yet, but on their way. */
  private readonly starting = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private seq = 0;
  private closed = false;

  constructor(
    private readonly opts: AutoscalerOptions,
    private readonly pool: PoolState,
    private readonly tokens: RuntimeTokenStore,
    private readonly log: Log,
    private readonly now: () => number = Date.now,
  ) {
    this.timer = setInterval(() => this.tick(), opts.tickMs ?? 1000);
    this.timer.unref();
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
    for (const p of this.provisioned.values()) this.check(p, now);
    const waiting = this.pool.waiting();
    for (const gpuClass of this.opts.classes) {
      if ((this.retryAt.get(gpuClass) ?? 0) > now) continue;
      const longWaits = (waiting.get(gpuClass) ?? []).filter((t) => now - t >= this.opts.scaleUpAfterMs).length;
      const ofClass = [...this.provisioned.values()].filter((p) => p.gpuClass === gpuClass && p.releasing === undefined);
      // A runtime on its way takes at least one of the waiting runs.
      const starting = this.starting.get(gpuClass) ?? 0;
      let need = longWaits - ofClass.filter((p) => !p.up).length - starting;
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
    clearInterval(this.timer);
    await Promise.all([...this.provisioned.values()].map((p) => this.release(p, 'the gateway is stopping')));
  }

  private check(p: Provisioned, now: number): void {
    if (p.releasing !== undefined || p.provided === undefined) return;
    const loads = this.pool.runtimesOf(p.credentialId);
    if (loads.length > 0) {
      p.up = true;
      const idle = loads.every((l) => l.idleSince !== null && now - l.idleSince >= this.opts.idleReleaseMs);
      if (idle) void this.release(p, `idle for ${Math.round(this.opts.idleReleaseMs / 1000)} s`);
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
    const p: Provisioned = { gpuClass, name, credentialId: credential.id, requestedAt: now, admitted: false, up: false };
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
