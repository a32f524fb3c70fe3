// Runtimes, per-class FIFO queues, assignment, cancellation, timeouts and the relay of a run's events.
// Transport-free: grpcApi feeds it runtime traffic through WorkLink/RuntimeEvent, wsApi gives it a RunSink per run.
import { randomUUID } from 'node:crypto';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { BlobStore } from './blobStore.js';
import { MetadataStore, RunEnd } from './metadataStore.js';
import type { Log } from './log.js';
import { checkSnapshot } from './snapshotCheck.js';

export interface GpuClassOffer {
  name: string;
  simulated: boolean;
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
  | { kind: 'failed'; code: string; message: string };

/** A non-final event of a run, as the kernel sees it (without `re`). */
export type RunEvent = { event: string } & Record<string, unknown>;

export type RunFinal =
  | { ok: true; event: 'done'; status: string; snapshot: string; timings: Record<string, unknown> }
  | { ok: false; error: { code: string; message: string } };

export interface RunSink {
  event(ev: RunEvent): void;
  finish(final: RunFinal): void;
}

export interface RunRequest {
  session: string;
  gpuClass: string;
  code: string;
  snapshot: Digest;
  /** 0 = no limit. Counted from assignment to a runtime, not from queueing. */
  timeoutS: number;
  /** The names the cell can reach, for a lazy restore of only those; null = the whole snapshot. */
  reach: string[] | null;
  /** Who and what the run is for, for counting GPU-seconds (usage.ts). */
  user: string;
  notebook: string;
  cell: string;
}

/** A run that held a slot, once the slot is free again: what usage and metrics count. */
export interface SlotUse {
  runId: string;
  req: RunRequest;
  runtime: string;
  submittedAt: number;
  startedAt: number;
  endedAt: number;
  /** 'ok' | 'error' (the cell raised) | the failure's code. */
  outcome: string;
  /** The runtime's and worker's timings of a finished run; {} otherwise. */
  timings: Record<string, unknown>;
}

/** Told of each run as it takes a slot and as it frees it; must not throw. */
export interface RunObserver {
  started(run: { runId: string; req: RunRequest; runtime: string; waitedSeconds: number }): void;
  released(use: SlotUse): void;
}

export interface ClassInfo {
  runtimes: number;
  capacity: number;
  busy: number;
  queued: number;
  simulated: boolean;
}

export interface SchedulerOptions {
  store: BlobStore;
  metadata: MetadataStore;
  heartbeatIntervalMs?: number;
  /** A runtime silent for this many heartbeat intervals is dropped. */
  missedHeartbeats?: number;
  /** How long a runtime has to confirm a cancel or timeout before the gateway gives up on that run's slot. */
  cancelGraceMs?: number;
  log?: Log;
  observer?: RunObserver;
  /** Classes no runtime may offer now that a provider can start one of (elastic/): their runs wait, not fail. */
  provisionable?: readonly string[];
  /** Asked before a runtime registers with a runtime token: a reason to refuse it, or null (elastic's one-time tokens). */
  admitRegistration?: (credentialId: string) => string | null;
}

/** A runtime as the autoscaler sees it. */
export interface RuntimeLoad {
  id: string;
  name: string;
  credential: string;
  busy: number;
  /** Since when it has held no run (ms since the epoch); null while it holds one. */
  idleSince: number | null;
}

export class SchedulerError extends Error {
  override name = 'SchedulerError';
}

type RunState = 'checking' | 'queued' | 'running' | 'finishing' | 'finished';

interface Run {
  id: string;
  req: RunRequest;
  sink: RunSink;
  seq: number;
  state: RunState;
  submittedAt: number;
  /** When a runtime took it: its GPU-seconds count from here to the slot's release. */
  startedAt?: number;
  runtime?: RuntimeEntry;
  position?: number;
  timer?: NodeJS.Timeout;
  graceTimer?: NodeJS.Timeout;
  /** The input snapshot's manifest and chunks: what its runtime may read for it (formatted digests). */
  readable?: ReadonlySet<string>;
  /** Blobs its runtime uploaded (verified) or was told are present while holding it: what its result may name besides its input. */
  proven: Set<string>;
}

interface RuntimeEntry {
  id: string;
  /** The runtime token it registered with: only that token may act for it, and revoking it drops the runtime. */
  credential: string;
  name: string;
  classes: Map<string, GpuClassOffer>;
  capacity: number;
  seq: number;
  link?: WorkLink;
  /** Runs holding a slot: assigned and not yet confirmed finished by the runtime. */
  slots: Map<string, Run>;
  lastSeen: number;
  idleSince: number;
}

export class Scheduler {
  readonly heartbeatIntervalMs: number;
  private readonly missedHeartbeats: number;
  private readonly cancelGraceMs: number;
  private readonly store: BlobStore;
  private readonly metadata: MetadataStore;
  private readonly log: Log;
  private readonly observer?: RunObserver;
  private readonly provisionable: ReadonlySet<string>;
  private readonly admitRegistration: (credentialId: string) => string | null;
  private readonly runtimes = new Map<string, RuntimeEntry>();
  private readonly runs = new Map<string, Run>();
  private readonly queues = new Map<string, Run[]>();
  private seq = 0;
  private readonly livenessTimer: NodeJS.Timeout;

  constructor(opts: SchedulerOptions) {
    this.store = opts.store;
    this.metadata = opts.metadata;
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 5000;
    this.missedHeartbeats = opts.missedHeartbeats ?? 3;
    this.cancelGraceMs = opts.cancelGraceMs ?? 5000;
    this.log = opts.log ?? ((line) => console.error(`kernelhop gateway: ${line}`));
    this.observer = opts.observer;
    this.provisionable = new Set(opts.provisionable ?? []);
    this.admitRegistration = opts.admitRegistration ?? (() => null);
    this.livenessTimer = setInterval(() => this.dropSilentRuntimes(), this.heartbeatIntervalMs);
    this.livenessTimer.unref();
  }

  // ---- runtimes ----

  register(req: { name: string; classes: GpuClassOffer[]; capacity: number; version: string }, credential: string): string {
    if (req.name.trim() === '') throw new SchedulerError('Register needs a runtime name (e.g. the host name)');
    if (req.classes.length === 0) throw new SchedulerError('Register needs at least one GPU class');
    for (const c of req.classes) {
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(c.name)) {
        throw new SchedulerError(`GPU class ${JSON.stringify(c.name)} must be 1-64 letters, digits, ".", "_" or "-"`);
      }
    }
    if (!Number.isInteger(req.capacity) || req.capacity < 1) {
      throw new SchedulerError(`capacity must be at least 1 cell at once, got ${req.capacity}`);
    }
    const refused = this.admitRegistration(credential);
    if (refused !== null) throw new SchedulerError(refused);
    const id = randomUUID();
    const rt: RuntimeEntry = {
      id,
      credential,
      name: req.name,
      classes: new Map(req.classes.map((c) => [c.name, c])),
      capacity: req.capacity,
      seq: this.seq++,
      slots: new Map(),
      lastSeen: Date.now(),
      idleSince: Date.now(),
    };
    this.runtimes.set(id, rt);
    this.record(this.metadata.runtimeRegistered({ id, ...req }));
    this.log(`runtime ${req.name} (${id}) registered: ${[...rt.classes.keys()].join(',')} x${req.capacity}`, { runtime: req.name });
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
    const runs = [...(this.runtimes.get(runtimeId)?.slots.values() ?? [])];
    return (digest) => inScope(runs, digest);
  }

  /** Records blobs the runtime uploaded, or was told are present, while holding its runs: their results may name them. */
  proved(runtimeId: string, digests: readonly string[]): void {
    for (const run of this.runtimes.get(runtimeId)?.slots.values() ?? []) for (const d of digests) run.proven.add(d);
  }

  /** Whether the runtime holds a run at all (may upload). */
  holdsRuns(runtimeId: string): boolean {
    return (this.runtimes.get(runtimeId)?.slots.size ?? 0) > 0;
  }

  /** False when the runtime is unknown (dropped or never registered): it must register again. */
  heartbeat(runtimeId: string): boolean {
    const rt = this.runtimes.get(runtimeId);
    if (rt === undefined) return false;
    rt.lastSeen = Date.now();
    this.record(this.metadata.runtimeSeen(runtimeId));
    return true;
  }

  attachWork(runtimeId: string, link: WorkLink): 'ok' | 'unknown' | 'already_attached' {
    const rt = this.runtimes.get(runtimeId);
    if (rt === undefined) return 'unknown';
    if (rt.link !== undefined) return 'already_attached';
    rt.link = link;
    rt.lastSeen = Date.now();
    this.pump();
    return 'ok';
  }

  /** The Work stream `link` ended: its runtime is gone. */
  workEnded(runtimeId: string, link: WorkLink, reason: string): void {
    const rt = this.runtimes.get(runtimeId);
    if (rt !== undefined && rt.link === link) this.dropRuntime(rt, reason);
  }

  runtimeEvent(runtimeId: string, runId: string, ev: RuntimeEvent): void {
    const rt = this.runtimes.get(runtimeId);
    if (rt === undefined) return;
    rt.lastSeen = Date.now();
    const run = rt.slots.get(runId);
    if (run === undefined) {
      this.log(`runtime ${rt.name} sent ${ev.kind} for run ${runId}, which it does not hold; ignored`, { run: runId, runtime: rt.name });
      return;
    }
    if (ev.kind === 'done' || ev.kind === 'failed') {
      // What the runtime could read or proved, taken before the slot goes: its result may name nothing else.
      const scope = [...rt.slots.values()];
      const outcome = ev.kind === 'failed' ? ev.code || 'worker_died' : ev.status;
      this.releaseSlot(run, outcome, ev.kind === 'done' ? parseObject(ev.timingsJson) : {});
      if (ev.kind === 'failed') {
        this.finish(run, { ok: false, error: { code: ev.code || 'worker_died', message: ev.message } });
      } else {
        this.finishDone(run, rt, ev, scope);
      }
      return;
    }
    // After a timeout or an unconfirmed cancel the kernel has its final reply; later output has nowhere to go.
    if (run.state !== 'running') return;
    run.sink.event(this.relayed(run, rt, ev));
  }

  // ---- runs ----

  /**
   * A place in line, taken when a request arrives: runs queue in the order of their tickets even when the
   * checks before `submit` finish out of order.
   */
  ticket(): number {
    return this.seq++;
  }

  /** Starts a run and returns its id at once; everything else reaches `sink`, including errors. */
  submit(req: RunRequest, sink: RunSink, ticket = this.ticket()): string {
    const run: Run = { id: randomUUID(), req, sink, seq: ticket, state: 'checking', submittedAt: Date.now(), proven: new Set() };
    this.runs.set(run.id, run);
    if (!this.classOffered(req.gpuClass)) {
      this.finish(run, { ok: false, error: { code: 'unknown_class', message: this.unknownClassMessage(req.gpuClass) } });
      return run.id;
    }
    this.record(
      this.metadata.runCreated({ id: run.id, session: req.session, gpuClass: req.gpuClass, snapshot: req.snapshot }),
    );
    void this.admit(run);
    return run.id;
  }

  cancel(runId: string, reason = 'cancelled by the user'): void {
    const run = this.runs.get(runId);
    if (run === undefined) return;
    const cancelled: RunFinal = {
      ok: false,
      error: { code: 'cancelled', message: `${reason}; your local state is unchanged` },
    };
    switch (run.state) {
      case 'checking':
        this.finish(run, cancelled);
        return;
      case 'queued':
        this.dequeue(run);
        this.finish(run, cancelled);
        this.updatePositions();
        return;
      case 'running':
        // The runtime interrupts the worker and answers with Failed{cancelled} (or Done, when the cell caught it).
        this.sendCancel(run, reason, cancelled);
        return;
      default:
        return;
    }
  }

  /** When each waiting run of each class was submitted (ms since the epoch), oldest first: for the autoscaler. */
  waiting(): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const [name, q] of this.queues) out.set(name, q.map((r) => r.submittedAt).sort((a, b) => a - b));
    return out;
  }

  /** The runtimes registered with runtime token `credential`, and what they hold. */
  runtimesOf(credential: string): RuntimeLoad[] {
    return [...this.runtimes.values()]
      .filter((rt) => rt.credential === credential)
      .map((rt) => ({ id: rt.id, name: rt.name, credential, busy: rt.slots.size, idleSince: rt.slots.size === 0 ? rt.idleSince : null }));
  }

  /** Input snapshots of the runs not yet finished, for gc. */
  activeSnapshots(): Digest[] {
    return [...this.runs.values()].filter((r) => r.state !== 'finished').map((r) => r.req.snapshot);
  }

  classes(): Record<string, ClassInfo> {
    const out: Record<string, ClassInfo> = {};
    for (const rt of this.runtimes.values()) {
      for (const c of rt.classes.values()) {
        const info = (out[c.name] ??= { runtimes: 0, capacity: 0, busy: 0, queued: 0, simulated: true });
        info.runtimes += 1;
        info.capacity += rt.capacity;
        info.busy += [...rt.slots.values()].filter((r) => r.req.gpuClass === c.name).length;
        // A class is simulated only when every runtime offering it merely poses as it.
        info.simulated &&= c.simulated;
      }
    }
    // A class a provider starts runtimes of is served even with none up (scaled to zero).
    for (const name of this.provisionable) out[name] ??= { runtimes: 0, capacity: 0, busy: 0, queued: 0, simulated: false };
    for (const [name, q] of this.queues) if (out[name] !== undefined) out[name].queued = q.length;
    return out;
  }

  /** Fails every run (the gateway is stopping) and stops timers. */
  close(): void {
    clearInterval(this.livenessTimer);
    for (const run of [...this.runs.values()]) {
      this.finish(run, {
        ok: false,
        error: { code: 'runtime_lost', message: 'the gateway is shutting down; your local state is unchanged' },
      });
    }
    for (const rt of this.runtimes.values()) rt.link?.close('gateway shutting down');
    this.runtimes.clear();
  }

  // ---- internals ----

  private async admit(run: Run): Promise<void> {
    let check;
    try {
      check = await checkSnapshot(this.store, run.req.snapshot);
    } catch (e) {
      this.finish(run, { ok: false, error: { code: 'internal', message: `could not read the store: ${String(e)}` } });
      return;
    }
    if (run.state !== 'checking') return; // cancelled meanwhile
    if (!check.ok) {
      this.finish(run, { ok: false, error: { code: 'missing_blobs', message: check.message } });
      return;
    }
    run.readable = new Set([formatDigest(run.req.snapshot), ...check.chunks.map(formatDigest)]);
    if (!this.classOffered(run.req.gpuClass)) {
      this.finish(run, {
        ok: false,
        error: { code: 'unknown_class', message: this.unknownClassMessage(run.req.gpuClass) },
      });
      return;
    }
    run.state = 'queued';
    const q = this.queues.get(run.req.gpuClass) ?? [];
    // Checks finish in any order; the queue keeps the order the runs were asked for.
    const after = q.findIndex((other) => other.seq > run.seq);
    q.splice(after < 0 ? q.length : after, 0, run);
    this.queues.set(run.req.gpuClass, q);
    this.pump();
  }

  /** Assigns queued runs, oldest first, to runtimes with a free slot; then tells the waiting their place. */
  private pump(): void {
    const waiting = [...this.queues.values()].flat().sort((a, b) => a.seq - b.seq);
    for (const run of waiting) {
      const rt = this.pickRuntime(run.req.gpuClass);
      if (rt !== undefined) this.dispatch(run, rt);
    }
    this.updatePositions();
  }

  private pickRuntime(gpuClass: string): RuntimeEntry | undefined {
    let best: RuntimeEntry | undefined;
    for (const rt of this.runtimes.values()) {
      if (rt.link === undefined || !rt.classes.has(gpuClass) || rt.slots.size >= rt.capacity) continue;
      const load = rt.slots.size / rt.capacity;
      if (best === undefined || load < best.slots.size / best.capacity) best = rt;
    }
    return best;
  }

  private dispatch(run: Run, rt: RuntimeEntry): void {
    this.dequeue(run);
    run.state = 'running';
    run.runtime = rt;
    run.startedAt = Date.now();
    rt.slots.set(run.id, run);
    this.observer?.started({ runId: run.id, req: run.req, runtime: rt.name, waitedSeconds: (run.startedAt - run.submittedAt) / 1000 });
    const { session, gpuClass, code, snapshot, timeoutS, reach } = run.req;
    (rt.link as WorkLink).send({ kind: 'assign', runId: run.id, session, gpuClass, code, snapshot, timeoutS, reach });
    if (timeoutS > 0) {
      run.timer = setTimeout(() => this.timedOut(run), timeoutS * 1000);
    }
    this.record(this.metadata.runStarted(run.id, rt.id));
  }

  private timedOut(run: Run): void {
    if (run.state !== 'running') return;
    const final: RunFinal = {
      ok: false,
      error: {
        code: 'timeout',
        message: `the cell ran longer than timeout_s=${run.req.timeoutS} and was stopped; your local state is unchanged`,
      },
    };
    this.sendCancel(run, 'timeout', final);
    // The kernel learns of the timeout now; the slot stays held until the runtime confirms or the grace passes.
    this.finish(run, final);
  }

  /** Sends Cancel; if the runtime does not end the run within the grace, ends it here with `fallback`. */
  private sendCancel(run: Run, reason: string, fallback: RunFinal): void {
    const rt = run.runtime as RuntimeEntry;
    rt.link?.send({ kind: 'cancel', runId: run.id, reason });
    if (run.graceTimer !== undefined) return;
    run.graceTimer = setTimeout(() => {
      this.log(`runtime ${rt.name} did not confirm the end of run ${run.id} in ${this.cancelGraceMs} ms`, { run: run.id, runtime: rt.name });
      this.releaseSlot(run, fallback.ok ? fallback.status : fallback.error.code, {});
      this.finish(run, fallback);
    }, this.cancelGraceMs);
  }

  private releaseSlot(run: Run, outcome: string, timings: Record<string, unknown>): void {
    clearTimeout(run.graceTimer);
    run.graceTimer = undefined;
    if (run.state === 'finished') this.runs.delete(run.id);
    if (run.runtime?.slots.delete(run.id)) {
      if (run.runtime.slots.size === 0) run.runtime.idleSince = Date.now();
      this.released(run, run.runtime, outcome, timings);
      this.pump();
    }
  }

  private released(run: Run, rt: RuntimeEntry, outcome: string, timings: Record<string, unknown>): void {
    const startedAt = run.startedAt ?? Date.now();
    this.observer?.released({
      runId: run.id,
      req: run.req,
      runtime: rt.name,
      submittedAt: run.submittedAt,
      startedAt,
      endedAt: Date.now(),
      outcome,
      timings,
    });
  }

  private finishDone(run: Run, rt: RuntimeEntry, ev: Extract<RuntimeEvent, { kind: 'done' }>, scope: Run[]): void {
    if (run.state !== 'running') return;
    run.state = 'finishing';
    clearTimeout(run.timer);
    // The kernel will fetch what the new manifest names: refuse to hand it a snapshot the store cannot serve.
    checkSnapshot(this.store, ev.snapshot).then(
      (check) => {
        if (!check.ok) {
          this.finish(run, {
            ok: false,
            error: {
              code: 'missing_blobs',
              message: `runtime ${rt.name} finished the cell but its snapshot is incomplete (${check.message}); your local state is unchanged`,
            },
          });
          return;
        }
        // The user is about to hold every blob the result names: only those the runtime had for its runs or
        // uploaded, never a digest of someone else's it merely learned.
        const foreign = [ev.snapshot, ...check.chunks].map(formatDigest).filter((d) => !inScope(scope, d));
        if (foreign.length > 0) {
          this.log(`runtime ${rt.name} named ${foreign.length} blob(s) in the result of run ${run.id} it neither got nor uploaded`, {
            run: run.id,
            runtime: rt.name,
          });
          this.finish(run, {
            ok: false,
            error: {
              code: 'bad_result',
              message: `runtime ${rt.name} returned a snapshot naming ${foreign.length} blob(s) it was never given nor uploaded (first ${foreign[0]}); refused, your local state is unchanged`,
            },
          });
          return;
        }
        this.finish(run, {
          ok: true,
          event: 'done',
          status: ev.status,
          snapshot: formatDigest(ev.snapshot),
          timings: parseObject(ev.timingsJson),
        });
      },
      (e: unknown) => {
        this.finish(run, { ok: false, error: { code: 'internal', message: `could not read the store: ${String(e)}` } });
      },
    );
  }

  private finish(run: Run, final: RunFinal): void {
    if (run.state === 'finished') return;
    if (run.state === 'queued') this.dequeue(run);
    run.state = 'finished';
    clearTimeout(run.timer);
    // While a slot is held (timeout sent, not yet confirmed) releaseSlot forgets the run instead.
    if (run.runtime === undefined || !run.runtime.slots.has(run.id)) this.runs.delete(run.id);
    const end: RunEnd = final.ok
      ? { status: 'done', outcome: final.status, resultSnapshot: final.snapshot, timingsJson: JSON.stringify(final.timings) }
      : { status: 'failed', errorCode: final.error.code, errorMessage: final.error.message };
    this.record(this.metadata.runFinished(run.id, end));
    run.sink.finish(final);
  }

  private dequeue(run: Run): void {
    const q = this.queues.get(run.req.gpuClass);
    if (q === undefined) return;
    const i = q.indexOf(run);
    if (i >= 0) q.splice(i, 1);
    if (q.length === 0) this.queues.delete(run.req.gpuClass);
  }

  private updatePositions(): void {
    for (const q of this.queues.values()) {
      q.forEach((run, i) => {
        if (run.position !== i + 1) {
          run.position = i + 1;
          run.sink.event({ event: 'queued', position: i + 1 });
        }
      });
    }
  }

  private relayed(run: Run, rt: RuntimeEntry, ev: RuntimeEvent): RunEvent {
    switch (ev.kind) {
      case 'started':
        return {
          event: 'started',
          runtime: rt.name,
          worker: ev.worker,
          warm: ev.warm,
          gpu_class: run.req.gpuClass,
          simulated: rt.classes.get(run.req.gpuClass)?.simulated ?? false,
        };
      case 'stream':
        return { event: 'stream', name: ev.name, text: ev.text };
      case 'display':
      case 'result':
        return { event: ev.kind, data: parseObject(ev.dataJson), metadata: parseObject(ev.metadataJson) };
      case 'error':
        return { event: 'error', ename: ev.ename, evalue: ev.evalue, traceback: ev.traceback, etype: ev.etype };
      case 'progress':
        return { event: 'progress', phase: ev.phase, done_bytes: ev.doneBytes, total_bytes: ev.totalBytes };
      default:
        throw new Error(`unreachable: ${ev.kind}`);
    }
  }

  private dropRuntime(rt: RuntimeEntry, reason: string): void {
    if (this.runtimes.get(rt.id) !== rt) return;
    this.runtimes.delete(rt.id);
    this.log(`runtime ${rt.name} (${rt.id}) dropped: ${reason}`, { runtime: rt.name });
    rt.link?.close(reason);
    for (const run of [...rt.slots.values()]) {
      clearTimeout(run.graceTimer);
      rt.slots.delete(run.id);
      this.released(run, rt, 'runtime_lost', {});
      this.finish(run, {
        ok: false,
        error: {
          code: 'runtime_lost',
          message: `runtime ${rt.name} stopped while running the cell; your local state is unchanged`,
        },
      });
      this.runs.delete(run.id); // also when it had finished already and only held its slot
    }
    // Waiting runs of a class nobody offers any more would wait forever: say so now.
    for (const [name, q] of [...this.queues]) {
      if (this.classOffered(name)) continue;
      for (const run of [...q]) {
        this.finish(run, {
          ok: false,
          error: {
            code: 'unknown_class',
            message: `runtime ${rt.name} stopped and ${this.unknownClassMessage(name)}; your local state is unchanged`,
          },
        });
      }
    }
    this.record(this.metadata.runtimeGone(rt.id, reason));
    this.pump();
  }

  private dropSilentRuntimes(): void {
    const limit = this.heartbeatIntervalMs * this.missedHeartbeats;
    const now = Date.now();
    for (const rt of [...this.runtimes.values()]) {
      if (now - rt.lastSeen > limit) this.dropRuntime(rt, `no heartbeat for ${now - rt.lastSeen} ms`);
    }
  }

  /** Whether a run of class `name` can be served: a runtime offers it, or a provider can start one that does. */
  private classOffered(name: string): boolean {
    for (const rt of this.runtimes.values()) if (rt.classes.has(name)) return true;
    return this.provisionable.has(name);
  }

  private unknownClassMessage(name: string): string {
    const available = Object.entries(this.classes()).map(
      ([c, info]) => `${c} (${info.runtimes} runtime${info.runtimes === 1 ? '' : 's'}${info.simulated ? ', simulated' : ''})`,
    );
    return available.length === 0
      ? `no runtime offers GPU class ${JSON.stringify(name)}: no runtime is connected to this gateway`
      : `no runtime offers GPU class ${JSON.stringify(name)}; available now: ${available.join(', ')}`;
  }

  /** Metadata writes must not fail or delay a run; a failed write is logged. */
  private record(p: Promise<void>): void {
    p.catch((e: unknown) => this.log(`metadata write failed: ${String(e)}`));
  }
}

function inScope(runs: readonly Run[], digest: string): boolean {
  return runs.some((r) => r.readable?.has(digest) === true || r.proven.has(digest));
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
