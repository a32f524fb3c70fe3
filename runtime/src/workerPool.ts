// Keeps Python workers started before they are needed, and a session's worker warm for its next cell.
// A worker only ever serves one session: state, imports and files a cell left behind stay in that session.
import { WorkerOptions, WorkerProcess } from './worker.js';

export interface PoolOptions {
  worker: WorkerOptions;
  /** Spare workers kept started and ready. */
  warm: number;
  /** How long a session's worker waits for that session's next cell; 0 recycles after every run. */
  sessionGraceMs: number;
  log: (line: string) => void;
}

interface SessionWorker {
  worker: WorkerProcess;
  timer: NodeJS.Timeout;
}

// After a worker fails to start, wait this long before starting spares again (no crash loop).
const RESTART_BACKOFF_MS = 5_000;

export class WorkerPool {
  private readonly spares: WorkerProcess[] = [];
  private readonly bySession = new Map<string, SessionWorker>();
  private readonly all = new Set<WorkerProcess>();
  private backoffUntil = 0;
  private backoffTimer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly opts: PoolOptions) {}

  start(): void {
    this.topUp();
  }

  /** Workers ready to take a cell now (spares and sessions' idle workers). */
  get warmCount(): number {
    return this.spares.filter((w) => w.isReady).length + this.bySession.size;
  }

  /** A worker for one run of `session`: its own idle one, a ready spare, or a new one (warm = false). */
  async acquire(session: string): Promise<{ worker: WorkerProcess; warm: boolean }> {
    const own = this.bySession.get(session);
    if (own) {
      this.bySession.delete(session);
      clearTimeout(own.timer);
      if (own.worker.alive && this.intact(own.worker)) return { worker: own.worker, warm: true };
      if (own.worker.alive) this.retire(own.worker);
    }
    for (const spare of this.spares.filter((w) => !this.intact(w))) {
      this.spares.splice(this.spares.indexOf(spare), 1);
      this.retire(spare);
    }
    const readyIndex = this.spares.findIndex((w) => w.isReady && w.alive);
    const pick = readyIndex >= 0 ? readyIndex : this.spares.findIndex((w) => w.alive);
    const worker = pick >= 0 ? (this.spares.splice(pick, 1)[0] as WorkerProcess) : this.spawn();
    const warm = worker.isReady;
    // The spare taken is replaced once the run has restored its state (replenish) or ended (release), not now: a
    // starting worker imports numpy, pandas and torch, seconds of CPU that a cold restore on a small host needs.
    await worker.ready;
    return { worker, warm };
  }

  /** Start spares up to the number kept ready (the run that took one has restored its state). */
  replenish(): void {
    this.topUp();
  }

  /** Back from a run: kept for the session's next cell when it is healthy, otherwise ended. */
  release(worker: WorkerProcess, session: string, reusable: boolean): void {
    worker.runId = null;
    if (!reusable || !worker.alive || this.stopped || this.opts.sessionGraceMs <= 0 || !session) {
      this.retire(worker); // which tops the spares up
      return;
    }
    this.topUp();
    const previous = this.bySession.get(session);
    if (previous) {
      clearTimeout(previous.timer);
      this.retire(previous.worker);
    }
    const timer = setTimeout(() => {
      if (this.bySession.get(session)?.worker === worker) this.bySession.delete(session);
      this.retire(worker);
    }, this.opts.sessionGraceMs);
    timer.unref();
    this.bySession.set(session, { worker, timer });
  }

  shutdown(): void {
    this.stopped = true;
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    for (const s of this.bySession.values()) clearTimeout(s.timer);
    this.bySession.clear();
    this.spares.length = 0;
    for (const w of this.all) w.kill();
  }

  /** A worker whose directories were removed under it (the cache wiped) cannot be handed blobs: it is retired. */
  private intact(worker: WorkerProcess): boolean {
    if (this.opts.worker.sandbox.intact(worker.space)) return true;
    this.opts.log(`worker ${worker.pid}: its directories under the cache are gone (the cache was wiped?); starting a fresh one`);
    return false;
  }

  private retire(worker: WorkerProcess): void {
    worker.kill();
    this.all.delete(worker);
    this.topUp();
  }

  private spawn(): WorkerProcess {
    const worker = new WorkerProcess(this.opts.worker);
    this.all.add(worker);
    worker.on('output', (name: string, text: string) => {
      if (worker.runId === null) this.opts.log(`worker ${worker.pid} ${name}: ${text.trimEnd()}`);
    });
    worker.once('exit', () => {
      if (!worker.isReady) this.backoffUntil = Date.now() + RESTART_BACKOFF_MS;
      this.all.delete(worker);
      const spare = this.spares.indexOf(worker);
      if (spare >= 0) this.spares.splice(spare, 1);
      for (const [session, s] of this.bySession) {
        if (s.worker === worker) {
          clearTimeout(s.timer);
          this.bySession.delete(session);
        }
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
    while (this.spares.filter((w) => w.alive).length < this.opts.warm) this.spares.push(this.spawn());
  }
}
