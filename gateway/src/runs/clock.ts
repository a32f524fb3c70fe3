// Time as the pool sees it: the gateway runs on the system clock, benchmarks/pool_sim on a simulated one.
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds, on any fixed origin. */
  now(): number;
  /** Calls `fn` once after `ms`; never keeps the process alive by itself. */
  after(ms: number, fn: () => void): Timer;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};
