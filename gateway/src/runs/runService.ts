// The one owner of a run's life in the gateway, each step once and in this order: admission (the input snapshot
// checked in the user's view, its chunk list kept), queueing and dispatch (the scheduler's pool), the deadline, the
// result check, the user's holds on the result. The ws and gRPC layers only frame, validate and route.
import { randomUUID } from 'node:crypto';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { BlobStore } from '../blobStore.js';
import { MetadataStore, RunEnd } from '../metadataStore.js';
import { quotaMessage } from '../quota.js';
import { FinalEvent, Job, Placement, RelayedEvent, RunRequest, Scheduler } from '../scheduler.js';
import { checkSnapshot } from '../snapshotCheck.js';
import { SnapshotStore } from '../snapshotStore.js';
import type { Timer } from './clock.js';

/** A non-final event of a run, as the kernel sees it (without `re`). */
export type RunEvent = { event: string } & Record<string, unknown>;

export type RunError = { code: string; message: string; missing?: string[] };

export type RunFinal =
  | { ok: true; event: 'done'; status: string; snapshot: string; timings: Record<string, unknown> }
  | { ok: false; error: RunError };

export interface RunSink {
  event(ev: RunEvent): void;
  finish(final: RunFinal): void;
}


export interface RunHandle {
  readonly id: string;
  cancel(reason?: string): void;
}

export interface RunServiceOptions {
  store: BlobStore;
  snapshots: SnapshotStore;
  metadata: MetadataStore;
  scheduler: Scheduler;
  /** This gateway's id in the gateways table: each run's row names it, so another gateway can end it (liveness.ts). */
  gatewayId: string;
  log: (line: string) => void;
}

// A hold's time is moved on at most this often by runs: gc keeps holds younger than its grace (15 min by default).
const HOLD_REFRESH_MS = 60_000;

type State = 'admitting' | 'queued' | 'running' | 'checking_result' | 'finished';

export class RunService {
  private readonly active = new Set<ActiveRun>();

  constructor(readonly opts: RunServiceOptions) {}

  /**
   * Starts a run and returns at once; everything else reaches `sink`, errors included. `view` is the store as the
   * user may see it: a user runs only a snapshot whose blobs are its own to read.
   */
  submit(req: RunRequest, view: BlobStore, sink: RunSink): RunHandle {
    const run = new ActiveRun(this, req, sink, this.opts.scheduler.ticket());
    this.active.add(run);
    void run.admit(view);
    return run;
  }

  /** Input snapshots of the runs not yet finished, for gc. */
  activeSnapshots(): Digest[] {
    return [...this.active].map((r) => r.req.snapshot);
  }

  /** Fails every run (the gateway is stopping). */
  close(): void {
    for (const run of [...this.active]) {
      run.finish({ ok: false, error: { code: 'runtime_lost', message: 'the gateway is shutting down; your local state is unchanged' } });
    }
  }

  /** @internal */
  forget(run: ActiveRun): void {
    this.active.delete(run);
  }

  /** Metadata writes must not fail or delay a run; a failed write is logged. */
  record(p: Promise<void>): void {
    p.catch((e: unknown) => this.opts.log(`metadata write failed: ${String(e)}`));
  }
}

class ActiveRun implements Job, RunHandle {
  readonly id = randomUUID();
  readonly user: string;
  readonly session: string;
  readonly gpuClass: string;
  readonly notebook: string;
  readonly cell: string;
  readonly code: string;
  readonly snapshot: Digest;
  readonly timeoutS: number;
  readonly reach: string[] | null;
  readonly submittedAt: number;
  readable: ReadonlySet<string> = new Set();
  readonly proven = new Set<string>();
  private state: State = 'admitting';
  private placement: Placement | null = null;
  private deadline: Timer | null = null;
  /** The input snapshot's chunks (formatted): the user held them when the run began. */
  private input: ReadonlySet<string> = new Set();

  constructor(
    private readonly service: RunService,
    readonly req: RunRequest,
    private readonly sink: RunSink,
    readonly seq: number,
  ) {
    this.user = req.user;
    this.session = req.session;
    this.gpuClass = req.gpuClass;
    this.notebook = req.notebook;
    this.cell = req.cell;
    this.submittedAt = service.opts.scheduler.clock.now();
    this.code = req.code;
    this.snapshot = req.snapshot;
    this.timeoutS = req.timeoutS;
    this.reach = req.reach;
  }

  private get scheduler(): Scheduler {
    return this.service.opts.scheduler;
  }

  // ---- 1. admission ----

  async admit(view: BlobStore): Promise<void> {
    let check;
    try {
      check = await checkSnapshot(view, this.req.snapshot);
    } catch (e) {
      this.finish({ ok: false, error: { code: 'internal', message: `could not read the store: ${String(e)}` } });
      return;
    }
    if (this.state !== 'admitting') return; // cancelled meanwhile
    if (!check.ok) {
      const missing = check.code === 'missing_blobs' ? { missing: check.missing.map(formatDigest) } : {};
      this.finish({ ok: false, error: { code: 'missing_blobs', message: check.message, ...missing } });
      return;
    }
    if (!this.scheduler.classOffered(this.gpuClass)) {
      this.finish({ ok: false, error: { code: 'unknown_class', message: this.scheduler.unknownClassMessage(this.gpuClass) } });
      return;
    }
    this.input = new Set(check.chunks.map(formatDigest));
    this.readable = new Set([formatDigest(this.req.snapshot), ...this.input]);
    this.service.record(
      this.service.opts.metadata.runCreated({
        id: this.id,
        session: this.session,
        gpuClass: this.gpuClass,
        snapshot: this.req.snapshot,
        gatewayId: this.service.opts.gatewayId,
        user: this.user,
        notebook: this.notebook,
        cell: this.cell,
      }),
    );
    // ---- 2. queueing (and dispatch, as slots allow) ----
    this.state = 'queued';
    this.scheduler.enqueue(this);
  }

  queued(position: number, waitS: number | null): void {
    if (this.state !== 'queued') return;
    this.sink.event({ event: 'queued', position, ...(waitS === null ? {} : { wait_s: waitS }) });
  }

  // ---- 3. dispatch and the deadline ----

  dispatched(placement: Placement): void {
    this.state = 'running';
    this.placement = placement;
    this.service.record(this.service.opts.metadata.runStarted(this.id, placement.runtimeId));
    const { timeoutS } = this.req;
    if (timeoutS > 0) this.deadline = this.scheduler.clock.after(timeoutS * 1000, () => this.timedOut());
  }

  requeued(): void {
    if (this.state !== 'running') return;
    this.state = 'queued';
    this.placement = null;
    // Its row says it waits again: it holds no slot, and counts against no limit, on other gateways either.
    this.service.record(this.service.opts.metadata.runRequeued(this.id));
    // The deadline counts from the assignment that the runtime takes.
    this.deadline?.cancel();
    this.deadline = null;
  }

  private timedOut(): void {
    if (this.state !== 'running') return;
    const final: RunFinal = {
      ok: false,
      error: {
        code: 'timeout',
        message: `the cell ran longer than timeout_s=${this.req.timeoutS} and was stopped; your local state is unchanged`,
      },
    };
    // The kernel learns of the timeout now; the slot stays held until the runtime confirms or the grace passes.
    this.scheduler.stop(this, 'timeout', () => undefined);
    this.finish(final);
  }

  event(ev: RelayedEvent): void {
    // After a timeout or an unconfirmed cancel the kernel has its final reply; later output has nowhere to go.
    if (this.state !== 'running') return;
    this.sink.event(relayed(ev, this.gpuClass, this.placement as Placement));
  }

  cancel(reason = 'cancelled by the user'): void {
    const cancelled: RunFinal = { ok: false, error: { code: 'cancelled', message: `${reason}; your local state is unchanged` } };
    switch (this.state) {
      case 'admitting':
        this.finish(cancelled);
        return;
      case 'queued':
        this.scheduler.withdraw(this);
        this.finish(cancelled);
        return;
      case 'running':
        // The runtime interrupts the worker and answers with Failed{cancelled} (or Done, when the cell caught it).
        this.scheduler.stop(this, reason, () => this.finish(cancelled));
        return;
      default:
        return;
    }
  }

  lost(code: 'runtime_lost' | 'unknown_class', message: string): void {
    this.finish({ ok: false, error: { code, message } });
  }

  // ---- 4. the result check ----

  ended(ev: FinalEvent, mayName: (digest: string) => boolean): void {
    if (this.state !== 'running') return;
    if (ev.kind === 'failed') {
      this.finish({ ok: false, error: { code: ev.code || 'worker_died', message: ev.message } });
      return;
    }
    this.state = 'checking_result';
    this.deadline?.cancel();
    void this.checkResult(ev, mayName).catch((e: unknown) => {
      this.finish({ ok: false, error: { code: 'internal', message: `could not read the store: ${String(e)}` } });
    });
  }

  private async checkResult(ev: Extract<FinalEvent, { kind: 'done' }>, mayName: (digest: string) => boolean): Promise<void> {
    const runtime = (this.placement as Placement).runtime;
    // The kernel will fetch what the new manifest names: refuse to hand it a snapshot the store cannot serve.
    const check = await checkSnapshot(this.service.opts.store, ev.snapshot);
    if (!check.ok) {
      this.finish({
        ok: false,
        error: {
          code: 'missing_blobs',
          message: `runtime ${runtime} finished the cell but its snapshot is incomplete (${check.message}); your local state is unchanged`,
        },
      });
      return;
    }
    // The user is about to hold every blob the result names: only those the runtime had for its runs or
    // uploaded, never a digest of someone else's it merely learned.
    const foreign = [ev.snapshot, ...check.chunks].map(formatDigest).filter((d) => !mayName(d));
    if (foreign.length > 0) {
      this.service.opts.log(`runtime ${runtime} named ${foreign.length} blob(s) in the result of run ${this.id} it neither got nor uploaded`);
      this.finish({
        ok: false,
        error: {
          code: 'bad_result',
          message: `runtime ${runtime} returned a snapshot naming ${foreign.length} blob(s) it was never given nor uploaded (first ${foreign[0]}); refused, your local state is unchanged`,
        },
      });
      return;
    }
    await this.holdResult(ev, [ev.snapshot, ...check.chunks]);
  }

  // ---- 5. the holds ----

  /**
   * The runtime made the result on the user's behalf: the user now holds its new blobs (the kernel fetches those
   * next), charged to its quota like an upload; after the reply the holds on the rest, the chunks the run started
   * from, are refreshed. A warm hop so waits on a few rows instead of one per chunk of the whole state.
   */
  private async holdResult(ev: Extract<FinalEvent, { kind: 'done' }>, named: Digest[]): Promise<void> {
    const { snapshots, log } = this.service.opts;
    const blobs = named.map((d) => ({ digest: formatDigest(d), size: d.sizeBytes }));
    const now = Date.now();
    const held = await snapshots.holdResult(this.user, blobs.filter((b) => !this.input.has(b.digest)), now);
    if (!held.ok) {
      this.finish({
        ok: false,
        error: {
          code: 'quota_exceeded',
          message: `the cell's result does not fit: ${quotaMessage(held.used, held.quota, held.adding)}; your local state is unchanged`,
        },
      });
      return;
    }
    this.finish({ ok: true, event: 'done', status: ev.status, snapshot: formatDigest(ev.snapshot), timings: parseObject(ev.timingsJson) });
    const kept = blobs.filter((b) => this.input.has(b.digest)).map((b) => b.digest);
    if (kept.length === 0) return;
    snapshots
      .refreshHolds(this.user, kept, now - HOLD_REFRESH_MS, now)
      .catch((e: unknown) => log(`refreshing the holds of run ${this.id}: ${String(e)}`));
  }

  finish(final: RunFinal): void {
    if (this.state === 'finished') return;
    if (this.state === 'queued') this.scheduler.withdraw(this);
    const recorded = this.state !== 'admitting';
    this.state = 'finished';
    this.deadline?.cancel();
    this.service.forget(this);
    if (recorded) {
      const end: RunEnd = final.ok
        ? { status: 'done', outcome: final.status, resultSnapshot: final.snapshot, timingsJson: JSON.stringify(final.timings) }
        : { status: 'failed', errorCode: final.error.code, errorMessage: final.error.message };
      this.service.record(this.service.opts.metadata.runFinished(this.id, end));
    }
    this.sink.finish(final);
  }
}

function relayed(ev: RelayedEvent, gpuClass: string, at: Placement): RunEvent {
  switch (ev.kind) {
    case 'started':
      return {
        event: 'started',
        runtime: at.runtime,
        worker: ev.worker,
        warm: ev.warm,
        gpu_class: gpuClass,
        simulated: at.simulated,
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
  }
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
