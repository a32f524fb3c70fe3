// A trace-driven simulation of the pool: the gateway's real Scheduler (gateway/src/scheduler.ts, not a copy) on a
// simulated clock, with simulated runtimes that hold each run for its cell's time. Notebook sessions come and go
// along a diurnal curve and run bursts of cells separated by minutes of thinking. The same trace gives the reserved
// baseline: one GPU per active session. benchmarks/pool_sim.js runs the full trace; test/poolSim.test.ts a small one.
import { randomUUID } from 'node:crypto';
import { makeDigest } from '@kernelhop/kernel-snapshot';
import { Autoscaler } from '../src/elastic/autoscaler.js';
import { ProvidedRuntime, RuntimeProvider, RuntimeRequest } from '../src/elastic/provider.js';
import { Clock, Timer } from '../src/runs/clock.js';
import type { RuntimeCredential, RuntimeTokenStore } from '../src/runtimeTokens.js';
import { DownMessage, FinalEvent, Job, Placement, RuntimeEvent, Scheduler, WorkLink } from '../src/scheduler.js';

export interface TraceOptions {
  sessions: number;
  /** Sessions per user: a user has several notebooks. */
  sessionsPerUser: number;
  /** Simulated span, hours; sessions start along a diurnal curve peaking at 14:00. */
  hours: number;
  /** Hours a session stays open (uniform between the two). */
  activeHours: [number, number];
  /** Mean minutes of thinking between bursts (exponential). */
  thinkMinutes: number;
  /** Cells per burst (uniform), seconds between cells of a burst (uniform). */
  burstCells: [number, number];
  burstGapS: [number, number];
  /** Cell run time: lognormal, median seconds and sigma, clipped to [1 s, 15 min]. */
  cellMedianS: number;
  cellSigma: number;
  seed: number;
}

export interface PoolOptions {
  runtimes: number;
  gpusPerRuntime: number;
  warmGraceS: number;
  /** Restore time of a cold run (new worker, state fetched) and a warm one (deltas only), seconds. */
  coldRestoreS: number;
  warmRestoreS: number;
  /** Grow and shrink the pool with the real autoscaler; `runtimes` is then the floor that is always up. */
  elastic?: ElasticOptions;
}

/** The autoscaler's settings (gateway/src/elastic/autoscaler.ts) and the simulated provider's boot time. */
export interface ElasticOptions {
  maxRuntimes: number;
  /** Seconds from asking for a GPU host to its runtime registering (uniform between the two). */
  bootS: [number, number];
  scaleUpAfterS: number;
  idleReleaseS: number;
  targetUtilization?: number;
}

export interface Cell {
  session: number;
  at: number;
  runS: number;
}

export interface SimReport {
  runs: number;
  poolGpus: number;
  reservedGpus: number;
  waitP50S: number;
  waitP95S: number;
  waitP99S: number;
  /** GPU-seconds of runs / (pool GPUs × span), over the whole trace and over its busiest hour. */
  utilization: number;
  peakHourUtilization: number;
  /** The cells' own GPU-seconds (restores not counted) / GPU time paid for: the useful share. */
  cellUtilization: number;
  /** The reserved baseline on the same trace: GPU-seconds of cells / GPU-seconds reserved by active sessions. */
  reservedUtilization: number;
  evictions: number;
  warmHits: number;
  /** Wall time of one scheduling decision (a run arriving or a slot freed), microseconds. */
  decisionP50Us: number;
  decisionP99Us: number;
  decisions: number;
  /** Wall time of the scheduler's own timers (warm workers ending, batches of queued positions), microseconds. */
  timerP50Us: number;
  timerP99Us: number;
  timers: number;
  /** GPU-hours the pool was up (a provided host from when it was asked for to its release), and the reserved ones. */
  gpuHours: number;
  reservedGpuHours: number;
  /** Runtimes up at once at most, and how many the autoscaler asked for over the trace (0 without elastic). */
  peakRuntimes: number;
  provided: number;
}

export const FULL_TRACE: TraceOptions = {
  sessions: 10_000,
  sessionsPerUser: 4,
  hours: 24,
  activeHours: [2, 6],
  thinkMinutes: 4,
  burstCells: [1, 5],
  burstGapS: [5, 30],
  cellMedianS: 12,
  cellSigma: 1.1,
  seed: 1,
};

export const DEFAULT_POOL: Omit<PoolOptions, 'runtimes'> = { gpusPerRuntime: 8, warmGraceS: 60, coldRestoreS: 2.5, warmRestoreS: 0.2 };

/** mulberry32: a small seeded generator, so a trace is the same in every run (benchmarks/fair_order.js uses it too). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The cells of every session, in time order; and each session's open span (for the reserved baseline). */
export function makeTrace(o: TraceOptions): { cells: Cell[]; spans: Array<[number, number]> } {
  const r = rng(o.seed);
  const uniform = (lo: number, hi: number): number => lo + (hi - lo) * r();
  const normal = (): number => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const span = o.hours * 3600;
  const cells: Cell[] = [];
  const spans: Array<[number, number]> = [];
  for (let s = 0; s < o.sessions; s++) {
    // Diurnal: start hours drawn around 14:00 (sd 3 h), folded into the span.
    const hour = (((14 + 3 * normal()) % 24) + 24) % 24;
    const start = ((hour / 24) * span) % span;
    const end = Math.min(span, start + uniform(o.activeHours[0], o.activeHours[1]) * 3600);
    spans.push([start, end]);
    let t = start + uniform(0, 60);
    while (t < end) {
      const burst = Math.round(uniform(o.burstCells[0], o.burstCells[1]));
      for (let i = 0; i < burst && t < end; i++) {
        const runS = Math.min(900, Math.max(1, o.cellMedianS * Math.exp(o.cellSigma * normal())));
        cells.push({ session: s, at: t, runS });
        // The next cell of the burst is written while this one runs; it is sent after this one ends (below).
        t += runS + uniform(o.burstGapS[0], o.burstGapS[1]);
      }
      t += -Math.log(1 - r()) * o.thinkMinutes * 60;
    }
  }
  cells.sort((a, b) => a.at - b.at);
  return { cells, spans };
}

/** Peak number of sessions open at once: the GPUs a reserved-GPU setup needs. */
export function reservedGpus(spans: Array<[number, number]>): number {
  const edges = spans.flatMap(([a, b]) => [[a, 1] as const, [b, -1] as const]).sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let open = 0;
  let peak = 0;
  for (const [, d] of edges) peak = Math.max(peak, (open += d));
  return peak;
}

/** Simulated time: a heap of timers, run in order. */
class SimClock implements Clock {
  private t = 0;
  private seq = 0;
  private readonly heap: Array<{ at: number; seq: number; fn: () => void; cancelled: boolean }> = [];

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void): Timer {
    const entry = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.push(entry);
    return { cancel: () => (entry.cancelled = true) };
  }

  /** Set by a timer whose work goes on in promises (the autoscaler's): they settle before time moves on. */
  settle = false;

  /** Runs timers in time order until none is left. */
  async run(): Promise<void> {
    for (;;) {
      const e = this.pop();
      if (e === undefined) return;
      if (e.cancelled) continue;
      this.t = e.at;
      e.fn();
      if (this.settle) {
        this.settle = false;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  }

  private less(i: number, j: number): boolean {
    const a = this.heap[i] as (typeof this.heap)[number];
    const b = this.heap[j] as (typeof this.heap)[number];
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(e: (typeof this.heap)[number]): void {
    const h = this.heap;
    h.push(e);
    for (let i = h.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      [h[i], h[p]] = [h[p] as (typeof h)[number], h[i] as (typeof h)[number]];
      i = p;
    }
  }

  private pop(): (typeof this.heap)[number] | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop() as (typeof h)[number];
    if (h.length > 0) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(l, m)) m = l;
        if (r < h.length && this.less(r, m)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m] as (typeof h)[number], h[i] as (typeof h)[number]];
        i = m;
      }
    }
    return top;
  }
}

export const SNAPSHOT = makeDigest('0'.repeat(64), 1);

/** A run with no notebook, code or input behind it, for driving the Scheduler alone: the simulator's runs and
 * fairOrder.test's are these, with their own callbacks. */
export abstract class BareJob {
  readonly gpuClass = 'gpu';
  readonly notebook = '';
  readonly cell = '';
  readonly code = '';
  readonly snapshot = SNAPSHOT;
  readonly timeoutS = 0;
  readonly reach = null;
  readonly readable = new Set<string>();
  readonly proven = new Set<string>();

  constructor(
    readonly id: string,
    readonly user: string,
    readonly session: string,
    readonly seq: number,
    readonly submittedAt: number,
  ) {}
}

class SimJob extends BareJob implements Job {
  dispatchedAt = -1;

  constructor(
    id: string,
    user: string,
    session: string,
    seq: number,
    submittedAt: number,
    readonly runS: number,
    private readonly onEnd: (job: SimJob) => void,
    private readonly clock: SimClock,
    private readonly stats: { waits: number[]; evictions: number },
  ) {
    super(id, user, session, seq, submittedAt);
  }

  queued(): void {}
  requeued(): void {}
  dispatched(p: Placement): void {
    this.dispatchedAt = this.clock.now();
    this.stats.waits.push((this.dispatchedAt - this.submittedAt) / 1000);
    if (p.evicted !== null) this.stats.evictions += 1;
  }
  event(): void {}
  ended(_ev: FinalEvent): void {
    this.onEnd(this);
  }
  lost(code: string, message: string): void {
    throw new Error(`simulated run ${this.id} lost: ${code}: ${message}`);
  }
}

/** A runtime's Work stream: holds each assigned run for its restore and cell time, then reports Done. */
class SimLink implements WorkLink {
  /** The session last served on each slot and when it went idle: a run of that session within the grace is warm. */
  private readonly lastOnSlot = new Map<number, { session: string; idleAt: number }>();
  id = '';

  constructor(
    private readonly sim: { clock: SimClock; jobs: Map<string, SimJob>; pool: PoolOptions; decide: (fn: () => void) => void },
    private readonly scheduler: () => Scheduler,
  ) {}

  warmHits = 0;

  send(msg: DownMessage): void {
    if (msg.kind !== 'assign') return;
    const job = this.sim.jobs.get(msg.runId) as SimJob;
    const now = this.sim.clock.now();
    const last = this.lastOnSlot.get(msg.slot);
    const warm = last !== undefined && last.session === msg.session && now - last.idleAt <= this.sim.pool.warmGraceS * 1000;
    if (warm) this.warmHits += 1;
    const holdMs = ((warm ? this.sim.pool.warmRestoreS : this.sim.pool.coldRestoreS) + job.runS) * 1000;
    this.sim.clock.after(holdMs, () => {
      this.lastOnSlot.set(msg.slot, { session: msg.session, idleAt: this.sim.clock.now() });
      const done: RuntimeEvent = { kind: 'done', status: 'ok', snapshot: SNAPSHOT, timingsJson: '' };
      this.sim.decide(() => this.scheduler().runtimeEvent(this.id, msg.runId, done));
    });
  }

  close(): void {}
}

function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** Runtime tokens in memory: the autoscaler makes one per provided runtime and revokes it on release. */
class SimTokens implements RuntimeTokenStore {
  private readonly byToken = new Map<string, RuntimeCredential>();

  async create(gpuClass: string | null, now: number): Promise<{ credential: RuntimeCredential; token: string }> {
    const credential: RuntimeCredential = { id: randomUUID(), gpuClass, createdAt: now, revokedAt: null };
    const token = randomUUID();
    this.byToken.set(token, credential);
    return { credential, token };
  }

  async authenticate(token: string): Promise<RuntimeCredential | undefined> {
    const c = this.byToken.get(token);
    return c?.revokedAt === null ? c : undefined;
  }

  async list(): Promise<RuntimeCredential[]> {
    return [...this.byToken.values()];
  }

  async revoke(id: string, now: number): Promise<boolean> {
    for (const c of this.byToken.values()) if (c.id === id && c.revokedAt === null) return Boolean((c.revokedAt = now));
    return false;
  }

  async close(): Promise<void> {}

  /** What the gateway's gRPC layer does with a Register's token: the credential it is. */
  credentialOf(token: string): string {
    return (this.byToken.get(token) as RuntimeCredential).id;
  }
}

/** A GPU host provider on simulated time: the host boots for `bootS`, then its runtime registers and takes work. */
class SimProvider implements RuntimeProvider {
  readonly kind = 'simulated';
  /** [asked for, released] of every provided host, ms: the GPU time paid for. */
  readonly spans: Array<[number, number]> = [];
  provided = 0;

  constructor(
    private readonly clock: SimClock,
    private readonly tokens: SimTokens,
    private readonly bootS: [number, number],
    private readonly random: () => number,
    private readonly start: (name: string, credential: string) => string,
    private readonly stop: (runtimeId: string) => void,
  ) {}

  async provide(req: RuntimeRequest): Promise<ProvidedRuntime> {
    const askedAt = this.clock.now();
    const credential = this.tokens.credentialOf(req.enrollmentToken);
    const bootMs = (this.bootS[0] + (this.bootS[1] - this.bootS[0]) * this.random()) * 1000;
    let runtimeId: string | null = null;
    const boot = this.clock.after(bootMs, () => (runtimeId = this.start(req.name, credential)));
    this.provided += 1;
    let released = false;
    return {
      ended: new Promise<void>(() => undefined),
      release: async () => {
        if (released) return;
        released = true;
        boot.cancel();
        if (runtimeId !== null) this.stop(runtimeId);
        this.spans.push([askedAt, this.clock.now()]);
      },
    };
  }
}

/** Replays `trace` on a pool of `pool.runtimes` × `pool.gpusPerRuntime` slots, or one the autoscaler sizes. */
export async function simulate(trace: { cells: Cell[]; spans: Array<[number, number]> }, o: TraceOptions, pool: PoolOptions): Promise<SimReport> {
  const clock = new SimClock();
  const jobs = new Map<string, SimJob>();
  const decisions: number[] = [];
  const timers: number[] = [];
  const timed = (into: number[], fn: () => void): void => {
    const t0 = process.hrtime.bigint();
    fn();
    into.push(Number(process.hrtime.bigint() - t0) / 1000);
  };
  const decide = (fn: () => void): void => timed(decisions, fn);
  // The scheduler's own timers, timed apart from decisions: the autoscaler's ticks settle their promises.
  const schedulerClock: Clock = { now: () => clock.now(), after: (ms, fn) => clock.after(ms, () => timed(timers, fn)) };
  const autoscalerClock: Clock = {
    now: () => clock.now(),
    after: (ms, fn) =>
      clock.after(ms, () => {
        fn();
        clock.settle = true;
      }),
  };
  let autoscaler: Autoscaler | null = null;
  const elastic = pool.elastic;
  const scheduler = new Scheduler({
    clock: schedulerClock,
    warmGraceMs: pool.warmGraceS * 1000,
    log: () => undefined,
    provisionable: elastic === undefined ? [] : ['gpu'],
    admitRegistration: (credential) => autoscaler?.admitRegistration(credential) ?? null,
  });
  const sim = { clock, jobs, pool, decide };
  const links: SimLink[] = [];
  let up = 0;
  let peakRuntimes = 0;
  const startRuntime = (name: string, credential: string): string => {
    const link = new SimLink(sim, () => scheduler);
    link.id = scheduler.register({ name, classes: [{ name: 'gpu', simulated: true }], capacity: pool.gpusPerRuntime, version: 'sim' }, credential);
    links.push(link);
    peakRuntimes = Math.max(peakRuntimes, (up += 1));
    decide(() => scheduler.attachWork(link.id, link));
    return link.id;
  };
  for (let i = 0; i < pool.runtimes; i++) startRuntime(`rt-${i}`, 'sim');
  const tokens = new SimTokens();
  const provider =
    elastic === undefined
      ? null
      : new SimProvider(clock, tokens, elastic.bootS, rng(o.seed + 1), startRuntime, () => {
          up -= 1;
        });
  if (elastic !== undefined && provider !== null) {
    autoscaler = new Autoscaler(
      {
        provider,
        classes: ['gpu'],
        gateway: 'sim',
        scaleUpAfterMs: elastic.scaleUpAfterS * 1000,
        idleReleaseMs: elastic.idleReleaseS * 1000,
        maxPerClass: elastic.maxRuntimes,
        registerTimeoutMs: 600_000,
        ...(elastic.targetUtilization === undefined ? {} : { targetUtilization: elastic.targetUtilization }),
        clock: autoscalerClock,
      },
      scheduler,
      tokens,
      () => undefined,
    );
  }
  // A session sends its next cell only once the previous one is home (a notebook runs one cell at a time).
  const bySession = new Map<number, Cell[]>();
  for (const c of trace.cells) (bySession.get(c.session) ?? bySession.set(c.session, []).get(c.session) as Cell[]).push(c);
  const stats = { waits: [] as number[], evictions: 0 };
  let busyMs = 0;
  const hourBusy = new Float64Array(Math.ceil(o.hours) + 1);
  let seq = 0;
  let left = trace.cells.length;
  const submit = (session: number, index: number, at: number): void => {
    const cell = (bySession.get(session) as Cell[])[index] as Cell;
    clock.after(Math.max(0, at - clock.now()), () => {
      const job = new SimJob(`r${seq}`, `u${Math.floor(session / o.sessionsPerUser)}`, `s${session}`, seq++, clock.now(), cell.runS, (j) => {
        jobs.delete(j.id);
        const end = clock.now();
        busyMs += end - j.dispatchedAt;
        // Busy time per hour, split at hour boundaries.
        for (let t = j.dispatchedAt; t < end; ) {
          const h = Math.floor(t / 3_600_000);
          const next = Math.min(end, (h + 1) * 3_600_000);
          hourBusy[Math.min(h, hourBusy.length - 1)] += next - t;
          t = next;
        }
        const following = (bySession.get(session) as Cell[])[index + 1];
        // The think time after a cell is the gap the trace gave it, counted from when this cell came home.
        if (following !== undefined) submit(session, index + 1, end + (following.at - cell.at - cell.runS) * 1000);
        // The last cell home: the provided hosts go, and the autoscaler stops ticking.
        if ((left -= 1) === 0 && autoscaler !== null) {
          void autoscaler.close();
          clock.settle = true;
        }
      }, clock, stats);
      jobs.set(job.id, job);
      decide(() => scheduler.enqueue(job));
    });
  };
  for (const [session, cells] of bySession) submit(session, 0, (cells[0] as Cell).at * 1000);
  await clock.run();
  const end = Math.max(o.hours * 3_600_000, clock.now());
  scheduler.close();
  // GPU time paid for: the floor all along, each provided host from when it was asked for until released.
  const paid: Array<[number, number]> = [
    ...Array.from({ length: pool.runtimes }, (): [number, number] => [0, end]),
    ...(provider?.spans ?? []),
  ];
  const hourPaid = new Float64Array(hourBusy.length);
  let paidMs = 0;
  for (const [a, b] of paid) {
    paidMs += (b - a) * pool.gpusPerRuntime;
    for (let t = a; t < b; ) {
      const h = Math.floor(t / 3_600_000);
      const next = Math.min(b, (h + 1) * 3_600_000);
      hourPaid[Math.min(h, hourPaid.length - 1)] += (next - t) * pool.gpusPerRuntime;
      t = next;
    }
  }
  const sortedWaits = Float64Array.from(stats.waits).sort();
  const sortedDecisions = Float64Array.from(decisions).sort();
  const sortedTimers = Float64Array.from(timers).sort();
  const poolGpus = (elastic === undefined ? pool.runtimes : peakRuntimes) * pool.gpusPerRuntime;
  const cellMs = trace.cells.reduce((n, c) => n + c.runS * 1000, 0);
  const reservedMs = trace.spans.reduce((n, [a, b]) => n + (b - a) * 1000, 0);
  let peakHour = 0;
  hourBusy.forEach((b, h) => {
    if ((hourPaid[h] as number) > 0) peakHour = Math.max(peakHour, b / (hourPaid[h] as number));
  });
  return {
    runs: stats.waits.length,
    poolGpus,
    reservedGpus: reservedGpus(trace.spans),
    waitP50S: percentile(sortedWaits, 50),
    waitP95S: percentile(sortedWaits, 95),
    waitP99S: percentile(sortedWaits, 99),
    utilization: busyMs / paidMs,
    cellUtilization: cellMs / paidMs,
    peakHourUtilization: peakHour,
    reservedUtilization: cellMs / reservedMs,
    evictions: stats.evictions,
    warmHits: links.reduce((n, l) => n + l.warmHits, 0),
    decisionP50Us: percentile(sortedDecisions, 50),
    decisionP99Us: percentile(sortedDecisions, 99),
    decisions: decisions.length,
    timerP50Us: percentile(sortedTimers, 50),
    timerP99Us: percentile(sortedTimers, 99),
    timers: timers.length,
    gpuHours: paidMs / 3_600_000,
    reservedGpuHours: reservedMs / 3_600_000,
    peakRuntimes,
    provided: provider?.provided ?? 0,
  };
}
