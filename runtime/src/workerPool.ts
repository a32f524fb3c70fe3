// The runtime's slots (one per device) and their Python workers: a spare started before it is needed, the worker of
// the run holding the slot, and a session's worker kept warm on its slot for that session's next cell.
// A worker only ever serves one session, and sees only its slot's device (CUDA_VISIBLE_DEVICES, set at its start).
import type { Slot } from './devices.js';
import { WorkerOptions, WorkerProcess } from './worker.js';

export interface PoolOptions {
  worker: WorkerOptions;
  slots: Slot[];
  /** Spare workers kept started and ready, on free slots. */
  warm: number;
  /** The longest a session's worker waits for that session's next cell; 0 recycles after every run. */
  sessionGraceMs: number;
  log: (line: string) => void;
}

interface Idle {
  worker: WorkerProcess;
  session: string;
  timer: NodeJS.Timeout;
}

interface SlotState {
  slot: Slot;
  /** Workers of runs holding the slot (one, unless a gateway assigned a busy slot twice). */
  running: Set<WorkerProcess>;
  idle: Idle | null;
  /** Started and importing or ready, for the slot's next cold run. */
  spares: WorkerProcess[];
}

// After a worker fails to start, wait this long before starting spares again (no crash loop).
const RESTART_BACKOFF_MS = 5_000;

export class WorkerPool {
  private readonly slots: SlotState[];
  private readonly all = new Set<WorkerProcess>();
  private backoffUntil = 0;
  private backoffTimer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly opts: PoolOptions) {
    this.slots = opts.slots.map((slot) => ({ slot, running: new Set(), idle: null, spares: [] }));
  }

  start(): void {
    this.topUp();
  }

  /** Workers ready to take a cell now (spares and sessions' idle workers). */
  get warmCount(): number {
    return this.slots.reduce((n, s) => n + (s.idle !== null ? 1 : 0) + s.spares.filter((w) => w.isReady).length, 0);
  }

  /**
   * A worker for one run of `session` on slot `index`: the session's idle one there, else the slot's ready spare, else
   * a new one (warm = false). The idle worker of another session on the slot is ended first: the gateway evicted it.
   */
  async acquire(session: string, index: number): Promise<{ worker: WorkerProcess; warm: boolean; slot: Slot }> {
    const state = this.slotFor(index);
    // The gateway placed the session elsewhere (its grace there ended): its old worker goes.
    for (const other of this.slots) {
      if (other !== state && other.idle?.session === session) this.endIdle(other, 'the session moved to another slot');
    }
    const idle = state.idle;
    if (idle !== null) {
      if (idle.session === session && idle.worker.alive && this.intact(idle.worker)) {
        clearTimeout(idle.timer);
        state.idle = null;
        state.running.add(idle.worker);
        return { worker: idle.worker, warm: true, slot: state.slot };
      }
      this.endIdle(state, idle.session === session ? 'not reusable' : 'evicted for another session');
    }
    for (const spare of state.spares.filter((w) => !this.intact(w))) {
      state.spares.splice(state.spares.indexOf(spare), 1);
      this.retire(spare);
    }
    const ready = state.spares.findIndex((w) => w.isReady && w.alive);
    const pick = ready >= 0 ? ready : state.spares.findIndex((w) => w.alive);
    const worker = pick >= 0 ? (state.spares.splice(pick, 1)[0] as WorkerProcess) : this.spawn(state);
    const warm = worker.isReady;
    state.running.add(worker);
    // The spare taken is replaced once the run has restored its state (replenish) or ended (release), not now: a
    // starting worker imports numpy, pandas and torch, seconds of CPU that a cold restore on a small host needs.
    await worker.ready;
    return { worker, warm, slot: state.slot };
  }

  /** Start spares up to the number kept ready (the run that took one has restored its state). */
  replenish(): void {
    this.topUp();
  }

  /** Back from a run: kept warm on its slot for the session's next cell (for `graceMs`) when healthy, else ended. */
  release(worker: WorkerProcess, session: string, reusable: boolean, graceMs: number): void {
    worker.runId = null;
    const state = this.slots.find((s) => s.running.has(worker));
    state?.running.delete(worker);
    const grace = Math.min(graceMs, this.opts.sessionGraceMs);
    if (state === undefined || !reusable || !worker.alive || this.stopped || grace <= 0 || !session) {
      this.retire(worker); // which tops the spares up
      return;
    }
    if (state.idle !== null) this.endIdle(state, 'replaced');
    const timer = setTimeout(() => {
      if (state.idle?.worker === worker) this.endIdle(state, 'its warm grace ended');
    }, grace);
    timer.unref();
    state.idle = { worker, session, timer };
    this.topUp();
  }

  shutdown(): void {
    this.stopped = true;
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    for (const s of this.slots) {
      if (s.idle !== null) clearTimeout(s.idle.timer);
      s.idle = null;
      s.spares.length = 0;
    }
    for (const w of this.all) w.kill();
  }

  /** A worker whose directories were removed under it (the cache wiped) cannot be handed blobs: it is retired. */
  private intact(worker: WorkerProcess): boolean {
    if (this.opts.worker.sandbox.intact(worker.space)) return true;
    this.opts.log(`worker ${worker.pid}: its directories under the cache are gone (the cache was wiped?); starting a fresh one`);
    return false;
  }

  /** The slot asked for, or (a slot unknown here, or busy) the first free one, so two runs never share a device. */
  private slotFor(index: number): SlotState {
    const asked = this.slots.find((s) => s.slot.index === index);
    if (asked !== undefined && asked.running.size === 0) return asked;
    const free = this.slots.find((s) => s.running.size === 0);
    const chosen = free ?? asked ?? (this.slots[0] as SlotState);
    this.opts.log(`slot ${index} is ${asked === undefined ? 'not one of this runtime' : 'busy'}; using slot ${chosen.slot.index}`);
    return chosen;
  }

  private endIdle(state: SlotState, why: string): void {
    const idle = state.idle;
    if (idle === null) return;
    clearTimeout(idle.timer);
    state.idle = null;
    this.opts.log(`worker ${idle.worker.pid} on slot ${state.slot.index} ended: ${why}`);
    this.retire(idle.worker);
  }

  private retire(worker: WorkerProcess): void {
    worker.kill();
    this.all.delete(worker);
    this.topUp();
  }

  private spawn(state: SlotState): WorkerProcess {
    const env = { ...this.opts.worker.env, CUDA_VISIBLE_DEVICES: state.slot.device, KERNELHOP_SLOT: String(state.slot.index) };
    const worker = new WorkerProcess({ ...this.opts.worker, env });
    this.all.add(worker);
    worker.on('output', (name: string, text: string) => {
      if (worker.runId === null) this.opts.log(`worker ${worker.pid} ${name}: ${text.trimEnd()}`);
    });
    worker.once('exit', () => {
      if (!worker.isReady) this.backoffUntil = Date.now() + RESTART_BACKOFF_MS;
      this.all.delete(worker);
      const spare = state.spares.indexOf(worker);
      if (spare >= 0) state.spares.splice(spare, 1);
      if (state.idle?.worker === worker) {
        clearTimeout(state.idle.timer);
        state.idle = null;
      }
      this.topUp();
    });
    worker.ready.catch((err: Error) => this.opts.log(`a worker failed to start: ${err.message}`));
    return worker;
  }

  private topUp(): void {
    if (this.stopped) return;
    const wait = this.backoffUntil - Date.now();
    if (wait > 0) {
      if (!this.backoffTimer) {
        this.backoffTimer = setTimeout(() => {
          this.backoffTimer = null;
          this.topUp();
        }, wait);
        this.backoffTimer.unref();
      }
      return;
    }
    // Spares go to the free slots first, one each, then round the slots again.
    const load = (s: SlotState): number => s.spares.length * 2 + (s.idle !== null || s.running.size > 0 ? 1 : 0);
    let spares = this.slots.reduce((n, s) => n + s.spares.filter((w) => w.alive).length, 0);
    while (spares < this.opts.warm && this.slots.length > 0) {
      const s = this.slots.reduce((a, b) => (load(b) < load(a) ? b : a));
      s.spares.push(this.spawn(s));
      spares += 1;
    }
  }
}
