// The pool: runtimes and their slots, warm sessions, the fair-share wait queue, dispatch and eviction.
// Transport-free and store-free, on an injected clock: grpcApi feeds it runtime traffic (WorkLink/RuntimeEvent),
// runs/runService.ts gives it one Job per run, and benchmarks/pool_sim drives this same code in simulated time.
import { randomUUID } from 'node:crypto';
import { Digest } from '@kernelhop/kernel-snapshot';
import { LRUCache } from 'lru-cache';
import { Clock, Timer, systemClock } from './runs/clock.js';
import { FairShare, UsageOrder } from './runs/fairShare.js';

export interface GpuClassOffer {
  name: string;
  simulated: boolean;
}

/** One device a runtime offers: a GPU, a MIG instance, or a slot posed on a CPU host. */
export interface SlotOffer {
  index: number;
  /** What the worker's CUDA_VISIBLE_DEVICES is set to: a GPU index, a MIG UUID, or the posed slot's index. */
  device: string;
  name: string;
  memoryMib: number;
}

/** Messages down a runtime's Work stream. */
export type DownMessage =
  | {
      kind: 'assign';
      runId: string;
      session: string;
      gpuClass: string;
      code: string;
      snapshot: Digest;
      timeoutS: number;
      reach: string[] | null;
      /** The slot the run takes; a warm worker of another session on it is ended first (eviction). */
      slot: number;
      /** How long the session's worker stays warm on the slot after the run. */
      warmGraceS: number;
    }
  | { kind: 'cancel'; runId: string; reason: string };

/** One runtime's Work stream, as the scheduler sees it. */
export interface WorkLink {
  send(msg: DownMessage): void;
  /** Ends the stream from the gateway's side (runtime dropped). */
  close(reason: string): void;
}

/** A runtime's CellEvent, decoded. */
export type RuntimeEvent =
  | { kind: 'started'; worker: string; warm: boolean }
  | { kind: 'stream'; name: string; text: string }
  | { kind: 'display' | 'result'; dataJson: string; metadataJson: string }
  | { kind: 'error'; ename: string; evalue: string; traceback: string[]; etype: string }
  | { kind: 'progress'; phase: string; doneBytes: number; totalBytes: number }
  | { kind: 'done'; status: string; snapshot: Digest; timingsJson: string }
  | { kind: 'failed'; code: string; message: string }
  /** The runtime did not start the run: its slot is held by another gateway's run ("Several gateways"). */
  | { kind: 'refused'; reason: string };

export type FinalEvent = Extract<RuntimeEvent, { kind: 'done' | 'failed' }>;
/** What a run's owner is told of as it happens: not its end, nor a refusal (the pool puts the run back in line). */
export type RelayedEvent = Exclude<RuntimeEvent, FinalEvent | { kind: 'refused' }>;

/** Where a run was placed. */
export interface Placement {
  runtimeId: string;
  runtime: string;
  slot: number;
  device: string;
  simulated: boolean;
  /** The session whose idle worker was evicted for it, if any. */
  evicted: string | null;
}

/** What a run asks for, as the ws layer validated it: RunService.submit takes it, and the pool's Job is one. */
export interface RunRequest {
  /** The user the run acts for: its blobs are read in the user's view, its result becomes the user's. */
  user: string;
  /** The session as runtimes see it (bound to the user by the ws layer). */
  session: string;
  gpuClass: string;
  code: string;
  snapshot: Digest;
  /** 0 = no limit. Counted from assignment to a runtime, not from queueing. */
  timeoutS: number;
  /** The names the cell can reach, for a lazy restore of only those; null = the whole snapshot. */
  reach: string[] | null;
  /** The notebook and cell the run came from, for the usage ledger ('' when the kernel did not say). */
  notebook: string;
  cell: string;
}

/** A run as the pool sees it: its request and its place in line; runs/runService.ts implements it and owns the rest. */
export interface Job extends Readonly<RunRequest> {
  readonly id: string;
  /** Place in line among runs of one user: FIFO within a user. */
  readonly seq: number;
  /** When the run was asked for (the scheduler's clock, ms): its wait in the queue is counted from here. */
  readonly submittedAt: number;
  /** The input snapshot's manifest and chunks (formatted digests): what its runtime may read for it. */
  readonly readable: ReadonlySet<string>;
  /** Blobs its runtime uploaded (verified) or was told are present while holding it. */
  readonly proven: Set<string>;
  queued(position: number, waitS: number | null): void;
  dispatched(placement: Placement): void;
  /** Its runtime refused it (another gateway's run holds the slot): it is in line again, at its old place. */
  requeued(): void;
  event(ev: RelayedEvent): void;
  /** The runtime ended the run and its slot is released; `mayName` says which blobs its result may name. */
  ended(ev: FinalEvent, mayName: (digest: string) => boolean): void;
  /** The run can no longer end normally (its runtime is gone, its class is no longer offered). */
  lost(code: 'runtime_lost' | 'unknown_class', message: string): void;
}

/** Who a run was for, as usage and metrics count it. */
export type RunLabels = Pick<RunRequest, 'user' | 'gpuClass' | 'notebook' | 'cell'>;

/** A run that held a slot, once the slot is free again (or warm): what usage and metrics count. */
export interface SlotUse {
  runId: string;
  req: RunLabels;
  runtime: string;
  submittedAt: number;
  startedAt: number;
  endedAt: number;
  /** 'ok' | 'error' (the cell raised) | the failure's code. */
  outcome: string;
  /** The runtime's and worker's timings of a finished run; {} otherwise. */
  timings: Record<string, unknown>;
}

/** Told of each run as it takes a slot and as it frees it, and of each eviction; must not throw. */
export interface RunObserver {
  started(run: { runId: string; req: RunLabels; runtime: string; waitedSeconds: number }): void;
  released(use: SlotUse): void;
  evicted?(gpuClass: string): void;
}

/** A runtime as the autoscaler sees it. */
export interface RuntimeLoad {
  id: string;
  name: string;
  credential: string;
  /** Slots running a run (warm workers do not count: they make way for any run). */
  busy: number;
  /** Slots it offers. */
  slots: number;
  /** Since when it has run nothing (ms on the scheduler's clock); null while it runs something. */
  idleSince: number | null;
  draining: boolean;
}

export interface ClassInfo {
  runtimes: number;
  capacity: number;
  busy: number;
  warm: number;
  queued: number;
  simulated: boolean;
}

export type SessionStatus =
  | { state: 'running'; runtime: string; gpu_class: string }
  | { state: 'queued'; gpu_class: string; position: number }
  | { state: 'warm'; runtime: string; gpu_class: string; warm_s_left: number }
  | { state: 'evicted' | 'expired' | 'lost'; runtime: string; gpu_class: string; ago_s: number }
  | { state: 'cold' };

export interface SchedulerOptions {
  heartbeatIntervalMs?: number;
  /** A runtime silent for this many heartbeat intervals is dropped. */
  missedHeartbeats?: number;
  /** How long a runtime has to confirm a cancel or timeout before the gateway gives up on that run's slot. */
  cancelGraceMs?: number;
  /** How long a session's worker stays warm on its slot after a run; 0: never. */
  warmGraceMs?: number;
  /** Slots one user may hold at once (running or warm); Infinity: no limit. */
  slotLimit?: (user: string) => number;
  fairShare?: FairShare;
  /** Where runtimes' registrations and departures are recorded (the metadata store). */
  runtimeLog?: RuntimeLog;
  clock?: Clock;
  log?: (line: string) => void;
  observer?: RunObserver;
  /** Classes no runtime may offer now that a provider can start one of (elastic/): their runs wait, not fail. */
  provisionable?: readonly string[];
  /** Asked before a runtime registers with a runtime token: a reason to refuse it, or null (elastic's one-time tokens). */
  admitRegistration?: (credentialId: string) => string | null;
}

export interface RuntimeLog {
  runtimeRegistered(info: { id: string; name: string; classes: GpuClassOffer[]; capacity: number; version: string }): Promise<void>;
  runtimeSeen(id: string): Promise<void>;
  runtimeGone(id: string, reason: string): Promise<void>;
}

export class SchedulerError extends Error {
  override name = 'SchedulerError';
}

interface Slot {
  rt: RuntimeEntry;
  offer: SlotOffer;
  job: Job | null;
  /** When the run holding it was dispatched (ms). */
  heldSince: number;
  /** A cancel or timeout was sent: released when the runtime confirms, or after the grace. */
  stopping: Timer | null;
  warm: Warm | null;
  /** Held by a run of another gateway the runtime serves, as the runtime says: neither free nor ours to place on. */
  taken: boolean;
}

interface Warm {
  session: string;
  user: string;
  gpuClass: string;
  slot: Slot;
  since: number;
  timer: Timer;
}

interface RuntimeEntry {
  id: string;
  /** The runtime token it registered with: only that token may act for it, and revoking it drops the runtime. */
  credential: string;
  name: string;
  classes: Map<string, GpuClassOffer>;
  slots: Slot[];
  /** Slots with neither a run nor a warm worker. */
  free: number;
  link?: WorkLink;
  lastSeen: number;
  /** When its last running slot became free (ms); kept while it runs something. */
  idleSince: number;
  /** The autoscaler is letting it go: no run is placed on it, and no worker stays warm there. */
  draining: boolean;
}

interface ClassState {
  runtimes: Set<RuntimeEntry>;
  /** Runtimes with a free slot (and a Work stream). */
  withFree: Set<RuntimeEntry>;
  /** Warm workers by session, oldest idle first (Map keeps insertion order; a worker is inserted when it idles). */
  warm: Map<string, Warm>;
  /** Waiting runs, FIFO per user. */
  waiting: Map<string, Job[]>;
  /** The users of `waiting` in fair-share order (those taken out by a round in progress aside). */
  order: UsageOrder;
  /** Users whose runs arrived while a round was in progress: they join the order when it ends. */
  newcomers: Set<string>;
  queued: number;
  /** Warm workers of other classes on runtimes offering this one: their sessions' runs of this class take them. */
  foreignWarm: number;
  /** The pending batch of `queued` events (positions and wait estimates), if one is due. */
  positionsDue: Timer | null;
  /** Recent run time (ms), averaged: the expected hold of a running slot, for wait estimates. */
  meanRunMs: number;
}

/** Remembered per session after its warm worker ended, so `%gpu` can say why the next cell starts cold. */
interface Ended {
  state: 'evicted' | 'expired' | 'lost';
  runtime: string;
  gpuClass: string;
  at: number;
}

const DEFAULT_RUN_MS = 30_000;
/**
 * Waiting runs hear their place and wait estimate in batches, at most this often per class, not at every decision:
 * recomputing the whole order costs O(waiting) and, at 10,000 sessions, would be most of a decision's time.
 */
export const POSITIONS_BATCH_MS = 250;

export class Scheduler {
  readonly heartbeatIntervalMs: number;
  readonly warmGraceMs: number;
  readonly fairShare: FairShare;
  readonly clock: Clock;
  private readonly missedHeartbeats: number;
  private readonly cancelGraceMs: number;
  private readonly slotLimit: (user: string) => number;
  private readonly log: (line: string) => void;
  private readonly runtimeLog: RuntimeLog | null;
  private readonly observer: RunObserver | undefined;
  private readonly provisionable: ReadonlySet<string>;
  private readonly admitRegistration: (credentialId: string) => string | null;
  private readonly runtimes = new Map<string, RuntimeEntry>();
  private readonly classStates = new Map<string, ClassState>();
  /** Slots by the id of the run they hold. */
  private readonly holding = new Map<string, Slot>();
  private readonly warmBySession = new Map<string, Warm>();
  /** Slots each user holds (running or warm). */
  private readonly held = new Map<string, number>();
  /** Runs each user has running through the other live gateways, as the shared runs table said at the last beat. */
  private elsewhere: ReadonlyMap<string, number> = new Map();
  private readonly ended = new LRUCache<string, Ended>({ max: 100_000 });
  private readonly positions = new WeakMap<Job, number>();
  private seq = 0;
  private pumping = false;
  private readonly livenessTimer: NodeJS.Timeout | null;

  constructor(opts: SchedulerOptions = {}) {
    this.clock = opts.clock ?? systemClock;
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 5000;
    this.missedHeartbeats = opts.missedHeartbeats ?? 3;
    this.cancelGraceMs = opts.cancelGraceMs ?? 5000;
    this.warmGraceMs = opts.warmGraceMs ?? 60_000;
    this.slotLimit = opts.slotLimit ?? (() => Infinity);
    this.fairShare = opts.fairShare ?? new FairShare(this.clock);
    this.log = opts.log ?? ((line) => console.error(`kernelhop gateway: ${line}`));
    this.runtimeLog = opts.runtimeLog ?? null;
    this.observer = opts.observer;
    this.provisionable = new Set(opts.provisionable ?? []);
    this.admitRegistration = opts.admitRegistration ?? (() => null);
    // Simulated runtimes send no heartbeats: liveness runs on the system clock only.
    if (opts.clock === undefined) {
      this.livenessTimer = setInterval(() => this.dropSilentRuntimes(), this.heartbeatIntervalMs);
      this.livenessTimer.unref();
    } else {
      this.livenessTimer = null;
    }
  }

  // ---- runtimes ----

  register(
    req: { name: string; classes: GpuClassOffer[]; capacity: number; slots?: SlotOffer[]; version: string },
    credential: string,
  ): string {
    if (req.name.trim() === '') throw new SchedulerError('Register needs a runtime name (e.g. the host name)');
    if (req.classes.length === 0) throw new SchedulerError('Register needs at least one GPU class');
    for (const c of req.classes) {
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(c.name)) {
        throw new SchedulerError(`GPU class ${JSON.stringify(c.name)} must be 1-64 letters, digits, ".", "_" or "-"`);
      }
    }
    const offers = req.slots !== undefined && req.slots.length > 0 ? req.slots : null;
    if (offers === null && (!Number.isInteger(req.capacity) || req.capacity < 1)) {
      throw new SchedulerError(`capacity must be at least 1 cell at once, got ${req.capacity}`);
    }
    if (offers !== null && new Set(offers.map((s) => s.index)).size !== offers.length) {
      throw new SchedulerError('Register names a slot index twice; each device is one slot');
    }
    // A runtime that names no devices (an older one, a test's) has `capacity` anonymous slots.
    const slotOffers =
      offers ?? Array.from({ length: req.capacity }, (_, index) => ({ index, device: String(index), name: '', memoryMib: 0 }));
    const refused = this.admitRegistration(credential);
    if (refused !== null) throw new SchedulerError(refused);
    const id = randomUUID();
    const rt: RuntimeEntry = {
      id,
      credential,
      name: req.name,
      classes: new Map(req.classes.map((c) => [c.name, c])),
      slots: [],
      free: slotOffers.length,
      lastSeen: this.clock.now(),
      idleSince: this.clock.now(),
      draining: false,
    };
    rt.slots = slotOffers.map((offer) => ({ rt, offer, job: null, heldSince: 0, stopping: null, warm: null, taken: false }));
    this.runtimes.set(id, rt);
    for (const c of rt.classes.keys()) this.classState(c).runtimes.add(rt);
    this.record(this.runtimeLog?.runtimeRegistered({ id, name: req.name, classes: req.classes, capacity: rt.slots.length, version: req.version }));
    this.log(`runtime ${req.name} (${id}) registered: ${[...rt.classes.keys()].join(',')} x${rt.slots.length}`);
    return id;
  }

  /** Whether `runtimeId` is a runtime registered with the runtime token `credential`. */
  registeredWith(runtimeId: string, credential: string): boolean {
    return this.runtimes.get(runtimeId)?.credential === credential;
  }

  /** Drops every runtime registered with `credential` (its token was revoked); their runs fail with runtime_lost. */
  dropRuntimesOf(credential: string, reason: string): number {
    const gone = [...this.runtimes.values()].filter((rt) => rt.credential === credential);
    for (const rt of gone) this.dropRuntime(rt, reason);
    return gone.length;
  }

  /**
   * What the runtime may read now: the blobs of the input snapshots and the uploads of the runs it holds. The runtime
   * is trusted with the state of the runs assigned to it, and with nothing else in the store.
   */
  readScope(runtimeId: string): (digest: string) => boolean {
    const jobs = this.jobsOf(runtimeId);
    return (digest) => inScope(jobs, digest);
  }

  /** Records blobs the runtime uploaded, or was told are present, while holding its runs: their results may name them. */
  proved(runtimeId: string, digests: readonly string[]): void {
    for (const job of this.jobsOf(runtimeId)) for (const d of digests) job.proven.add(d);
  }

  /** Whether the runtime holds a run at all (may upload). */
  holdsRuns(runtimeId: string): boolean {
    return this.jobsOf(runtimeId).length > 0;
  }

  /** False when the runtime is unknown (dropped or never registered): it must register again. */
  heartbeat(runtimeId: string): boolean {
    const rt = this.runtimes.get(runtimeId);
    if (rt === undefined) return false;
    rt.lastSeen = this.clock.now();
    this.record(this.runtimeLog?.runtimeSeen(runtimeId));
    return true;
  }

  attachWork(runtimeId: string, link: WorkLink): 'ok' | 'unknown' | 'already_attached' {
    const rt = this.runtimes.get(runtimeId);
    if (rt === undefined) return 'unknown';
    if (rt.link !== undefined) return 'already_attached';
    rt.link = link;
    rt.lastSeen = this.clock.now();
    this.freeChanged(rt);
    this.pump();
    return 'ok';
  }

  /** The Work stream `link` ended: its runtime is gone. */
  workEnded(runtimeId: string, link: WorkLink, reason: string): void {
    const rt = this.runtimes.get(runtimeId);
    if (rt !== undefined && rt.link === link) this.dropRuntime(rt, reason);
  }

  /**
   * The slots of the runtime that runs of other gateways hold now (the whole set, "Several gateways"). A warm worker
   * of ours on one was evicted by the runtime; a slot no longer taken is free again.
   */
  slotsTaken(runtimeId: string, indexes: readonly number[]): void {
    const rt = this.runtimes.get(runtimeId);
    if (rt === undefined) return;
    rt.lastSeen = this.clock.now();
    const taken = new Set(indexes);
    for (const slot of rt.slots) {
      const now = taken.has(slot.offer.index);
      if (now === slot.taken) continue;
      slot.taken = now;
      // A slot our own run holds keeps it: the runtime refuses one of the two runs, and release() settles the count.
      if (slot.job !== null) continue;
      if (now && slot.warm !== null) {
        const w = slot.warm;
        this.ended.set(w.session, { state: 'evicted', runtime: rt.name, gpuClass: w.gpuClass, at: this.clock.now() });
        this.dropWarm(w);
        this.held.set(w.user, (this.held.get(w.user) ?? 1) - 1);
      } else if (now) {
        rt.free -= 1;
      } else {
        rt.free += 1;
      }
    }
    this.freeChanged(rt);
    this.pump();
  }

  runtimeEvent(runtimeId: string, runId: string, ev: RuntimeEvent): void {
    const rt = this.runtimes.get(runtimeId);
    if (rt === undefined) return;
    rt.lastSeen = this.clock.now();
    const slot = this.holding.get(runId);
    if (slot === undefined || slot.rt !== rt || slot.job === null) {
      this.log(`runtime ${rt.name} sent ${ev.kind} for run ${runId}, which it does not hold; ignored`);
      return;
    }
    const job = slot.job;
    if (ev.kind === 'refused') {
      this.refused(slot, ev.reason);
      return;
    }
    if (ev.kind === 'done' || ev.kind === 'failed') {
      // What the runtime could read or proved, taken before the slot goes: its result may name nothing else.
      const scope = this.jobsOf(rt.id);
      const outcome = ev.kind === 'failed' ? ev.code || 'worker_died' : ev.status;
      this.release(slot, ev.kind === 'done', outcome, ev.kind === 'done' ? parseObject(ev.timingsJson) : {});
      job.ended(ev, (d) => inScope(scope, d));
      this.pump();
      return;
    }
    job.event(ev);
  }

  // ---- runs ----

  /** A place in line, taken when a request arrives: runs of a user queue in the order they were asked for. */
  ticket(): number {
    return this.seq++;
  }

  /** Whether a run of class `name` can be served: a runtime offers it, or a provider can start one that does. */
  classOffered(name: string): boolean {
    return (this.classStates.get(name)?.runtimes.size ?? 0) > 0 || this.provisionable.has(name);
  }

  /** When each waiting run of each class was asked for (ms on the scheduler's clock), oldest first: for the autoscaler. */
  waiting(): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const [name, cs] of this.classStates) {
      if (cs.queued === 0) continue;
      out.set(name, [...cs.waiting.values()].flat().map((j) => j.submittedAt).sort((a, b) => a - b));
    }
    return out;
  }

  /** The runtimes registered with runtime token `credential`, and what they run. */
  runtimesOf(credential: string): RuntimeLoad[] {
    return [...this.runtimes.values()]
      .filter((rt) => rt.credential === credential)
      .map((rt) => {
        const busy = running(rt);
        return { id: rt.id, name: rt.name, credential, busy, slots: rt.slots.length, idleSince: busy === 0 ? rt.idleSince : null, draining: rt.draining };
      });
  }

  /**
   * Stops placing runs on a runtime, or starts again: the autoscaler drains a runtime the load no longer needs, and
   * releases it once its running cells are done. Its idle warm workers end now (their state is home already).
   */
  drain(runtimeId: string, draining: boolean): void {
    const rt = this.runtimes.get(runtimeId);
    if (rt === undefined || rt.draining === draining) return;
    rt.draining = draining;
    const now = this.clock.now();
    for (const slot of rt.slots) {
      if (slot.warm === null) continue;
      this.ended.set(slot.warm.session, { state: 'expired', runtime: rt.name, gpuClass: slot.warm.gpuClass, at: now });
      this.expire(slot.warm);
    }
    this.freeChanged(rt);
    if (!draining) this.pump();
  }

  /** Puts a run in line for its class (the class must be offered) and assigns what can be assigned. */
  enqueue(job: Job): void {
    const cs = this.classState(job.gpuClass);
    const line = cs.waiting.get(job.user) ?? [];
    // Admission checks finish in any order; a user's line keeps the order its runs were asked for.
    const after = line.findIndex((other) => other.seq > job.seq);
    line.splice(after < 0 ? line.length : after, 0, job);
    cs.waiting.set(job.user, line);
    cs.queued += 1;
    // A round in progress takes newcomers in at its end, as a round serves the users waiting when it began.
    if (this.pumping) cs.newcomers.add(job.user);
    else this.reorder(cs, job.user, this.clock.now());
    this.pump();
  }

  /** Takes a waiting run out of line; false when it is not waiting. */
  withdraw(job: Job): boolean {
    const cs = this.classStates.get(job.gpuClass);
    const line = cs?.waiting.get(job.user);
    const i = line?.indexOf(job) ?? -1;
    if (cs === undefined || line === undefined || i < 0) return false;
    line.splice(i, 1);
    if (line.length === 0) cs.waiting.delete(job.user);
    cs.queued -= 1;
    if (cs.order.has(job.user)) this.reorder(cs, job.user, this.clock.now());
    this.positionsChanged(job.gpuClass, cs);
    return true;
  }

  /**
   * Asks the runtime to stop a running run (Cancel with `reason`); its slot stays held until the runtime ends the run,
   * or for at most the cancel grace, after which `unconfirmed` is called and the slot is released.
   */
  stop(job: Job, reason: string, unconfirmed: () => void): void {
    const slot = this.holding.get(job.id);
    if (slot === undefined || slot.job !== job) return;
    slot.rt.link?.send({ kind: 'cancel', runId: job.id, reason });
    if (slot.stopping !== null) return;
    slot.stopping = this.clock.after(this.cancelGraceMs, () => {
      if (slot.job !== job) return;
      this.log(`runtime ${slot.rt.name} did not confirm the end of run ${job.id} in ${this.cancelGraceMs} ms`);
      this.release(slot, false, reason === 'timeout' ? 'timeout' : 'cancelled', {});
      unconfirmed();
      this.pump();
    });
  }

  classes(): Record<string, ClassInfo> {
    const out: Record<string, ClassInfo> = {};
    for (const [name, cs] of this.classStates) {
      if (cs.runtimes.size === 0) continue;
      const info: ClassInfo = { runtimes: 0, capacity: 0, busy: 0, warm: cs.warm.size, queued: cs.queued, simulated: true };
      for (const rt of cs.runtimes) {
        info.runtimes += 1;
        info.capacity += rt.slots.length;
        // A slot another gateway's run holds is busy too, as far as this gateway's users can tell.
        for (const s of rt.slots) if (s.job?.gpuClass === name || (s.taken && s.job === null)) info.busy += 1;
        // A class is simulated only when every runtime offering it merely poses as it.
        info.simulated &&= rt.classes.get(name)?.simulated ?? true;
      }
      out[name] = info;
    }
    // A class a provider starts runtimes of is served even with none up (scaled to zero).
    for (const name of this.provisionable) {
      out[name] ??= { runtimes: 0, capacity: 0, busy: 0, warm: 0, queued: this.classStates.get(name)?.queued ?? 0, simulated: false };
    }
    return out;
  }

  /** Where a session's cells would run now: on its warm worker, or cold (and why). */
  sessionStatus(session: string): SessionStatus {
    const now = this.clock.now();
    for (const slot of this.holding.values()) {
      if (slot.job?.session === session) return { state: 'running', runtime: slot.rt.name, gpu_class: slot.job.gpuClass };
    }
    const warm = this.warmBySession.get(session);
    if (warm !== undefined) {
      const left = Math.max(0, (warm.since + this.warmGraceMs - now) / 1000);
      return { state: 'warm', runtime: warm.slot.rt.name, gpu_class: warm.gpuClass, warm_s_left: Math.round(left) };
    }
    for (const [name, cs] of this.classStates) {
      for (const line of cs.waiting.values()) {
        const job = line.find((j) => j.session === session);
        if (job !== undefined) return { state: 'queued', gpu_class: name, position: this.positions.get(job) ?? 0 };
      }
    }
    const ended = this.ended.get(session);
    if (ended !== undefined) {
      return { state: ended.state, runtime: ended.runtime, gpu_class: ended.gpuClass, ago_s: Math.round((now - ended.at) / 1000) };
    }
    return { state: 'cold' };
  }

  /** Ends every runtime link and stops timers (the gateway is stopping; its runs were failed by their owner). */
  close(): void {
    if (this.livenessTimer !== null) clearInterval(this.livenessTimer);
    for (const w of this.warmBySession.values()) w.timer.cancel();
    for (const slot of this.holding.values()) slot.stopping?.cancel();
    for (const cs of this.classStates.values()) cs.positionsDue?.cancel();
    for (const rt of this.runtimes.values()) rt.link?.close('gateway shutting down');
    this.runtimes.clear();
    this.classStates.clear();
  }

  // ---- placement ----

  /**
   * Each user's running runs on the other live gateways (read from the shared runs table on each beat): they count
   * against the user's slot limit here, and the runs that waited at the limit are looked at again.
   */
  runningElsewhere(counts: ReadonlyMap<string, number>): void {
    this.elsewhere = counts;
    this.pump();
  }

  /**
   * Assigns waiting runs while slots allow. Users are served in order of their recent GPU-seconds, least first,
   * one run each per round (so a run that starts counts against its user at once), FIFO within a user. A round takes
   * users out of the class's order one at a time and stops once no slot is left that any of them could take.
   */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (const [name, cs] of this.classStates) {
        if (cs.queued === 0) continue;
        const now = this.clock.now();
        let placed = true;
        while (placed && cs.queued > 0 && mayPlace(cs)) {
          placed = false;
          const taken: string[] = [];
          for (let user = cs.order.shift(now); user !== undefined; user = cs.order.shift(now)) {
            taken.push(user);
            const line = cs.waiting.get(user) as Job[];
            const job = line[0] as Job;
            const slot = this.place(job, cs);
            if (slot === null) continue;
            line.shift();
            if (line.length === 0) cs.waiting.delete(user);
            cs.queued -= 1;
            this.dispatch(job, slot);
            placed = true;
            if (!mayPlace(cs)) break;
          }
          // Back in line for the next round or decision, keyed by their new first run; and anyone who came meanwhile.
          for (const user of [...taken, ...cs.newcomers]) this.reorder(cs, user, now);
          cs.newcomers.clear();
        }
        this.positionsChanged(name, cs);
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Puts `user` back in the class's order with its first waiting run, or out of it when it waits for none. */
  private reorder(cs: ClassState, user: string, now: number): void {
    const head = cs.waiting.get(user)?.[0];
    if (head === undefined) cs.order.delete(user);
    else cs.order.set(user, head.seq, now);
  }

  /** The users waiting for the class, in the order they would be served now (positions; the naive order of tests). */
  usersInOrder(gpuClass: string): string[] {
    const cs = this.classStates.get(gpuClass);
    if (cs === undefined) return [];
    const users = [...cs.waiting.keys()];
    if (users.length < 2) return users;
    const now = this.clock.now();
    const usage = new Map(users.map((u) => [u, this.fairShare.usage(u, now)]));
    const head = (u: string): number => (cs.waiting.get(u) as Job[])[0]?.seq ?? 0;
    // Equal usage (new users): the one asking first goes first.
    return users.sort((a, b) => (usage.get(a) as number) - (usage.get(b) as number) || head(a) - head(b));
  }

  /** The slot `job` gets now, or null: its own warm worker, a free slot, or the oldest idle warm worker (evicted). */
  private place(job: Job, cs: ClassState): Slot | null {
    const own = this.warmBySession.get(job.session);
    if (own !== undefined && own.slot.rt.classes.has(job.gpuClass) && own.slot.rt.link !== undefined) return own.slot;
    if ((this.held.get(job.user) ?? 0) + (this.elsewhere.get(job.user) ?? 0) >= this.slotLimit(job.user)) {
      // At its limit a user may still trade one of its own idle workers for this run.
      for (const w of cs.warm.values()) if (w.user === job.user && w.slot.rt.link !== undefined) return w.slot;
      return null;
    }
    // The fullest runtime with a free slot: runs pack, so a runtime the load no longer needs drains and can go.
    let best: RuntimeEntry | undefined;
    for (const rt of cs.withFree) if (best === undefined || rt.free < best.free) best = rt;
    if (best !== undefined) return best.slots.find((s) => s.job === null && s.warm === null && !s.taken) as Slot;
    // No slot free: the worker idle the longest goes (its state is home already).
    for (const w of cs.warm.values()) if (w.slot.rt.link !== undefined) return w.slot;
    return null;
  }

  private dispatch(job: Job, slot: Slot): void {
    const rt = slot.rt;
    const now = this.clock.now();
    let evictedSession: string | null = null;
    if (slot.warm !== null) {
      const w = slot.warm;
      if (w.session !== job.session) {
        evictedSession = w.session;
        this.ended.set(w.session, { state: 'evicted', runtime: rt.name, gpuClass: w.gpuClass, at: now });
        this.log(`evicted the idle worker of a session of ${w.user} from ${rt.name} slot ${slot.offer.index} for a run of ${job.user}`);
        this.observer?.evicted?.(w.gpuClass);
      }
      this.dropWarm(w);
      this.held.set(w.user, (this.held.get(w.user) ?? 1) - 1);
    } else {
      rt.free -= 1;
      this.freeChanged(rt);
    }
    this.ended.delete(job.session);
    this.held.set(job.user, (this.held.get(job.user) ?? 0) + 1);
    slot.job = job;
    slot.heldSince = now;
    this.holding.set(job.id, slot);
    this.fairShare.onRunStart(job.user, now);
    const waitedSeconds = Math.max(0, now - job.submittedAt) / 1000;
    this.observer?.started({ runId: job.id, req: labelsOf(job), runtime: rt.name, waitedSeconds });
    const { code, snapshot, timeoutS, reach } = job;
    (rt.link as WorkLink).send({
      kind: 'assign',
      runId: job.id,
      session: job.session,
      gpuClass: job.gpuClass,
      code,
      snapshot,
      timeoutS,
      reach,
      slot: slot.offer.index,
      warmGraceS: this.warmGraceMs / 1000,
    });
    job.dispatched({
      runtimeId: rt.id,
      runtime: rt.name,
      slot: slot.offer.index,
      device: slot.offer.device,
      simulated: rt.classes.get(job.gpuClass)?.simulated ?? false,
      evicted: evictedSession,
    });
  }

  /** The run on `slot` ended: its slot time is counted, and its worker stays warm for the session or the slot is free. */
  private release(slot: Slot, keepWarm: boolean, outcome: string, timings: Record<string, unknown>): void {
    const job = slot.job as Job;
    const rt = slot.rt;
    const now = this.clock.now();
    slot.stopping?.cancel();
    slot.stopping = null;
    slot.job = null;
    this.holding.delete(job.id);
    const heldMs = now - slot.heldSince;
    const cs = this.classStates.get(job.gpuClass);
    if (cs !== undefined) cs.meanRunMs = cs.meanRunMs * 0.9 + heldMs * 0.1;
    this.fairShare.onRunEnd({ user: job.user, gpuClass: job.gpuClass, runtime: rt.name, gpuSeconds: heldMs / 1000 }, slot.heldSince);
    if (running(rt) === 0) rt.idleSince = now;
    this.observer?.released({
      runId: job.id,
      req: labelsOf(job),
      runtime: rt.name,
      submittedAt: job.submittedAt,
      startedAt: slot.heldSince,
      endedAt: now,
      outcome,
      timings,
    });
    const previous = this.warmBySession.get(job.session);
    if (slot.taken) {
      // Another gateway's run came onto the slot meanwhile (the runtime evicts our worker for it): neither free nor warm.
      this.held.set(job.user, (this.held.get(job.user) ?? 1) - 1);
      return;
    }
    if (keepWarm && this.warmGraceMs > 0 && rt.link !== undefined && !rt.draining && cs !== undefined) {
      // The runtime keeps one worker per session: a worker warm elsewhere for it is ended there.
      if (previous !== undefined) this.expire(previous);
      const warm: Warm = { session: job.session, user: job.user, gpuClass: job.gpuClass, slot, since: now, timer: { cancel: () => undefined } };
      warm.timer = this.clock.after(this.warmGraceMs, () => {
        if (slot.warm !== warm) return;
        this.ended.set(warm.session, { state: 'expired', runtime: rt.name, gpuClass: warm.gpuClass, at: this.clock.now() });
        this.expire(warm);
        this.pump();
      });
      slot.warm = warm;
      cs.warm.set(job.session, warm);
      this.warmBySession.set(job.session, warm);
      this.foreignWarmChanged(warm, 1);
      return;
    }
    // A drained runtime keeps no worker warm: `%gpu` says the session's worker ended.
    if (keepWarm && rt.draining) this.ended.set(job.session, { state: 'expired', runtime: rt.name, gpuClass: job.gpuClass, at: now });
    this.held.set(job.user, (this.held.get(job.user) ?? 1) - 1);
    rt.free += 1;
    this.freeChanged(rt);
  }

  /**
   * The runtime did not start the run on `slot` (another gateway's run holds it): the dispatch is undone, the slot
   * counts as taken until the runtime says otherwise, and the run goes back in line at the place its ticket gives it.
   */
  private refused(slot: Slot, reason: string): void {
    const job = slot.job as Job;
    slot.stopping?.cancel();
    slot.stopping = null;
    slot.job = null;
    slot.taken = true;
    this.holding.delete(job.id);
    this.held.set(job.user, (this.held.get(job.user) ?? 1) - 1);
    this.fairShare.onRunUndone(job.user, slot.heldSince);
    if (running(slot.rt) === 0) slot.rt.idleSince = this.clock.now();
    this.log(`runtime ${slot.rt.name} refused run ${job.id} on slot ${slot.offer.index} (${reason}); it waits again`);
    job.requeued();
    this.enqueue(job);
  }

  /** A warm worker's slot becomes free. */
  private expire(w: Warm): void {
    this.dropWarm(w);
    this.held.set(w.user, (this.held.get(w.user) ?? 1) - 1);
    w.slot.rt.free += 1;
    this.freeChanged(w.slot.rt);
  }

  private dropWarm(w: Warm): void {
    w.timer.cancel();
    w.slot.warm = null;
    this.foreignWarmChanged(w, -1);
    this.classStates.get(w.gpuClass)?.warm.delete(w.session);
    if (this.warmBySession.get(w.session) === w) this.warmBySession.delete(w.session);
  }

  private foreignWarmChanged(w: Warm, by: 1 | -1): void {
    for (const c of w.slot.rt.classes.keys()) if (c !== w.gpuClass) this.classState(c).foreignWarm += by;
  }

  private freeChanged(rt: RuntimeEntry): void {
    const has = rt.free > 0 && rt.link !== undefined && !rt.draining && this.runtimes.get(rt.id) === rt;
    for (const c of rt.classes.keys()) {
      const cs = this.classState(c);
      if (has) cs.withFree.add(rt);
      else cs.withFree.delete(rt);
    }
  }

  /** The class's queue changed: its waiting runs hear of their places with the next batch. */
  private positionsChanged(gpuClass: string, cs: ClassState): void {
    if (cs.positionsDue !== null || cs.queued === 0) return;
    cs.positionsDue = this.clock.after(POSITIONS_BATCH_MS, () => {
      cs.positionsDue = null;
      this.updatePositions(gpuClass);
    });
  }

  /** Tells each waiting run of the class its place and the expected wait, when its place changed. */
  private updatePositions(gpuClass: string): void {
    const cs = this.classStates.get(gpuClass);
    if (cs === undefined || cs.queued === 0) return;
    const order: Job[] = [];
    // The order in which they would be served: one run per user per round, users by usage; a round visits only the
    // users with runs left, so this is O(waiting) whatever the longest line.
    let lines = this.usersInOrder(gpuClass).map((u) => cs.waiting.get(u) as Job[]);
    for (let round = 0; lines.length > 0; round++) {
      for (const line of lines) order.push(line[round] as Job);
      lines = lines.filter((line) => line.length > round + 1);
    }
    let releases: number[] | null = null;
    order.forEach((job, i) => {
      if (this.positions.get(job) === i + 1) return;
      this.positions.set(job, i + 1);
      releases ??= this.expectedReleases(cs, order.length);
      job.queued(i + 1, waitEstimate(releases, i, cs.meanRunMs, this.clock.now()));
    });
  }

  /** When the busy slots of the class are expected free, soonest first: at most `n` of them. */
  private expectedReleases(cs: ClassState, n: number): number[] {
    const now = this.clock.now();
    const out: number[] = [];
    for (const rt of cs.runtimes) {
      for (const s of rt.slots) {
        if (s.job !== null) out.push(Math.max(now, s.heldSince + cs.meanRunMs));
        else if (s.warm !== null) out.push(now);
      }
    }
    out.sort((a, b) => a - b);
    return out.slice(0, n);
  }

  private dropRuntime(rt: RuntimeEntry, reason: string): void {
    if (this.runtimes.get(rt.id) !== rt) return;
    this.runtimes.delete(rt.id);
    this.log(`runtime ${rt.name} (${rt.id}) dropped: ${reason}`);
    rt.link?.close(reason);
    const now = this.clock.now();
    for (const slot of rt.slots) {
      if (slot.warm !== null) {
        this.ended.set(slot.warm.session, { state: 'lost', runtime: rt.name, gpuClass: slot.warm.gpuClass, at: now });
        this.expire(slot.warm);
      }
      const job = slot.job;
      if (job === null) continue;
      this.release(slot, false, 'runtime_lost', {});
      job.lost('runtime_lost', `runtime ${rt.name} stopped while running the cell; your local state is unchanged`);
    }
    for (const c of rt.classes.keys()) {
      const cs = this.classState(c);
      cs.runtimes.delete(rt);
      cs.withFree.delete(rt);
      if (cs.runtimes.size > 0 || this.provisionable.has(c)) continue;
      // Waiting runs of a class nobody offers any more would wait forever: say so now.
      for (const job of [...cs.waiting.values()].flat()) {
        job.lost('unknown_class', `runtime ${rt.name} stopped and ${this.unknownClassMessage(c)}; your local state is unchanged`);
      }
      cs.waiting.clear();
      cs.order.clear();
      cs.queued = 0;
    }
    this.record(this.runtimeLog?.runtimeGone(rt.id, reason));
    this.pump();
  }

  private dropSilentRuntimes(): void {
    const limit = this.heartbeatIntervalMs * this.missedHeartbeats;
    const now = this.clock.now();
    for (const rt of [...this.runtimes.values()]) {
      if (now - rt.lastSeen > limit) this.dropRuntime(rt, `no heartbeat for ${now - rt.lastSeen} ms`);
    }
  }

  unknownClassMessage(name: string): string {
    const available = Object.entries(this.classes()).map(
      ([c, info]) => `${c} (${info.runtimes} runtime${info.runtimes === 1 ? '' : 's'}${info.simulated ? ', simulated' : ''})`,
    );
    return available.length === 0
      ? `no runtime offers GPU class ${JSON.stringify(name)}: no runtime is connected to this gateway`
      : `no runtime offers GPU class ${JSON.stringify(name)}; available now: ${available.join(', ')}`;
  }

  /** Metadata writes must not fail or delay scheduling; a failed write is logged. */
  private record(p: Promise<void> | undefined): void {
    p?.catch((e: unknown) => this.log(`metadata write failed: ${String(e)}`));
  }

  private jobsOf(runtimeId: string): Job[] {
    const rt = this.runtimes.get(runtimeId);
    if (rt === undefined) return [];
    return rt.slots.flatMap((s) => (s.job === null ? [] : [s.job]));
  }

  private classState(name: string): ClassState {
    let cs = this.classStates.get(name);
    if (cs === undefined) {
      cs = {
        runtimes: new Set(),
        withFree: new Set(),
        warm: new Map(),
        waiting: new Map(),
        order: new UsageOrder(this.fairShare),
        newcomers: new Set(),
        queued: 0,
        foreignWarm: 0,
        positionsDue: null,
        meanRunMs: DEFAULT_RUN_MS,
      };
      this.classStates.set(name, cs);
    }
    return cs;
  }
}

/**
 * Whether a waiting run of the class could get a slot now: a free one, a warm worker to evict, or a warm worker of
 * its own session left by a run of another class. Without one a round ends early: no later user could be placed.
 */
function mayPlace(cs: ClassState): boolean {
  return cs.withFree.size > 0 || cs.warm.size > 0 || cs.foreignWarm > 0;
}

function running(rt: RuntimeEntry): number {
  return rt.slots.filter((s) => s.job !== null).length;
}

function labelsOf(job: Job): RunLabels {
  return { user: job.user, gpuClass: job.gpuClass, notebook: job.notebook, cell: job.cell };
}

function parseObject(json: string): Record<string, unknown> {
  if (json === '') return {};
  try {
    const v: unknown = JSON.parse(json);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function inScope(jobs: readonly Job[], digest: string): boolean {
  return jobs.some((j) => j.readable.has(digest) || j.proven.has(digest));
}

/** Seconds until the run at 0-based place `i` gets a slot, from when the busy slots are expected free. */
function waitEstimate(releases: number[], i: number, meanRunMs: number, now: number): number | null {
  if (releases.length === 0) return null;
  const at = (releases[i % releases.length] as number) + Math.floor(i / releases.length) * meanRunMs;
  return Math.round(Math.max(0, at - now) / 100) / 10;
}
