// One Assignment from fetch to Done: chunks into the cache, the cell on a worker, its events relayed
// as CellEvents, new blobs uploaded, then exactly one final event (Done or Failed).
import {
  Digest,
  formatDigest,
  makeDigest,
  parseDigest,
} from '@kernelhop/kernel-snapshot';
import { ChunkCache, CorruptCacheEntry } from './chunkCache.js';
import { treeBlobs } from './fileTree.js';
import { GatewayClient } from './gatewayClient.js';
import type { PackageOverlays, Prepared } from './packages.js';
import type { Assignment, CellEvent } from './proto.js';
import type { Sandbox } from './sandbox.js';
import { toJson } from '@bufbuild/protobuf';
import { create, RunCellSchema, RunFailure_Code, RunTimingsSchema, type WorkerDone } from '@kernelhop/proto';
import { WorkerEvent, WorkerProcess } from './worker.js';
import { WorkerPool } from './workerPool.js';

/** Where a run's events go: the Work stream it came from. */
export interface EventSink {
  send(event: CellEvent): Promise<void>;
  readonly congested: boolean;
  drained(): Promise<void>;
}

export interface RunnerDeps {
  gateway: GatewayClient;
  cache: ChunkCache;
  overlays: PackageOverlays;
  sandbox: Sandbox;
  pool: WorkerPool;
  runtimeName: string;
}

type StopCode = 'cancelled' | 'timeout';
/** What a run fetched: the blobs its worker is handed (the manifest and the chunks it restores). */
type Fetched = { seconds: number; bytes: number; given: Digest[] };
type Final = { code: string; message: string };
/** done: the worker's Done, with `upload` the new blobs of its snapshot, already taken into the cache. */
type Outcome = { done?: WorkerDone; upload?: Digest[]; final?: Final };

// After SIGINT, a cell that has not stopped in this time (a C call that ignores signals) is killed.
const INTERRUPT_GRACE_MS = 1_500;

export class Run {
  readonly runId: string;
  private readonly abort = new AbortController();
  private stop: { code: StopCode; message: string } | null = null;
  private worker: WorkerProcess | null = null;
  private finished = false;
  /** The chunks of the snapshot this run started from (formatted digests), known once it is fetched. */
  private inputChunks = new Set<string>();
  private timeoutTimer: NodeJS.Timeout | null = null;
  /** How long the session's worker stays warm after the run; 0 (unset): as long as the runtime's --session-grace. */
  private readonly warmGraceMs: number;
  private killTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly assignment: Assignment,
    private readonly deps: RunnerDeps,
    private readonly sink: EventSink,
  ) {
    this.runId = assignment.runId;
    this.warmGraceMs = assignment.warmGraceS > 0 ? assignment.warmGraceS * 1000 : Infinity;
  }

  /** Stop the run: SIGINT to a running cell, and a Failed with `code` as its final event. */
  cancel(code: StopCode, message: string): void {
    if (this.finished || this.stop) return;
    this.stop = { code, message };
    this.abort.abort();
    if (this.worker && this.worker.runId === this.runId) this.interrupt(this.worker);
  }

  private interrupt(worker: WorkerProcess): void {
    worker.interrupt();
    this.killTimer = setTimeout(() => worker.kill(), INTERRUPT_GRACE_MS);
  }

  /** Runs to the end; never rejects (every failure becomes a Failed event). */
  async execute(): Promise<void> {
    const started = Date.now();
    const timeoutS = this.assignment.timeoutS;
    if (timeoutS > 0) {
      this.timeoutTimer = setTimeout(
        () => this.cancel('timeout', `the cell ran longer than its timeout of ${timeoutS} s and was stopped`),
        timeoutS * 1000,
      );
    }
    try {
      const snapshot = makeDigest(this.assignment.snapshot?.hash, Number(this.assignment.snapshot?.sizeBytes ?? -1));
      const acquiring = this.deps.pool.acquire(this.assignment.session, this.assignment.slot ?? 0);
      // Awaited below, after the fetch: a worker that fails to start meanwhile must not be an unhandled rejection.
      acquiring.catch(() => undefined);
      let fetched: Fetched;
      let packages: Prepared;
      try {
        fetched = await this.fetch(snapshot);
        packages = await this.preparePackages(snapshot);
      } catch (err) {
        acquiring
          .then(({ worker }) => this.deps.pool.release(worker, this.assignment.session, true, this.warmGraceMs))
          .catch(() => undefined);
        throw err;
      }
      let acquired: { worker: WorkerProcess; warm: boolean };
      try {
        acquired = await acquiring;
      } catch (err) {
        return await this.fail('worker_died', (err as Error).message);
      }
      const { worker, warm } = acquired;
      this.worker = worker;
      if (this.stop) {
        this.deps.pool.release(worker, this.assignment.session, true, this.warmGraceMs);
        return await this.fail(this.stop.code, this.stop.message);
      }
      try {
        await this.deps.cache.give(worker.space, fetched.given);
      } catch (err) {
        this.deps.pool.release(worker, this.assignment.session, false, this.warmGraceMs);
        throw err;
      }
      await this.emit({ started: { worker: `${this.deps.runtimeName}/${worker.pid}`, warm } });
      const outcome = await this.runOnWorker(worker, snapshot, fetched, packages);
      if (outcome.final) return await this.fail(outcome.final.code, outcome.final.message);
      await this.finishDone(outcome.done as WorkerDone, outcome.upload ?? [], fetched, started);
    } catch (err) {
      if (this.stop) return await this.fail(this.stop.code, this.stop.message);
      await this.fail('restore_failed', (err as Error).message);
    } finally {
      if (this.timeoutTimer) clearTimeout(this.timeoutTimer);
      if (this.killTimer) clearTimeout(this.killTimer);
    }
  }

  /** The overlay of the packages the kernel has and the workers lack: built before the worker restores anything. */
  private async preparePackages(snapshot: Digest): Promise<Prepared> {
    const environment = (await this.deps.cache.manifest(snapshot)).meta?.environment;
    // --no-packages: the kernel sent no environment.
    if (environment === undefined) return { overlay: null, notes: {} };
    return this.deps.overlays.prepare(environment);
  }

  /** The snapshot's manifest and the chunks the worker will read into the cache: all, or a lazy restore's. */
  private async fetch(snapshot: Digest): Promise<Fetched> {
    const t0 = Date.now();
    const { lazy, reach } = this.assignment;
    const { cache, gateway } = this.deps;
    const progress = (done: number, total: number): void => {
      void this.emit({ progress: { phase: 'fetch', doneBytes: done, totalBytes: total } });
    };
    try {
      await cache.fetchMissing(gateway, [snapshot], undefined, this.abort.signal);
      let chunks: Digest[];
      try {
        chunks = await cache.manifestChunks(snapshot);
      } catch (err) {
        // A cached manifest found corrupt was dropped: fetched again, the hop goes on.
        if (!(err instanceof CorruptCacheEntry)) throw err;
        await cache.fetchMissing(gateway, [snapshot], undefined, this.abort.signal);
        chunks = await cache.manifestChunks(snapshot);
      }
      // The working directory's files are wanted whatever the cell reaches: they are laid out before it runs.
      const files = await treeBlobs(cache, snapshot, (level) => cache.fetchMissing(gateway, level, undefined, this.abort.signal));
      chunks = [...chunks, ...files];
      this.inputChunks = new Set(chunks.map(formatDigest));
      const wanted = lazy ? [...(await cache.reachedChunks(snapshot, new Set(reach))), ...files] : chunks;
      const bytes = await cache.fetchMissing(gateway, wanted, progress, this.abort.signal);
      return { seconds: (Date.now() - t0) / 1000, bytes, given: [snapshot, ...wanted] };
    } catch (err) {
      const why = (err as Error).message;
      throw new Error(`could not fetch snapshot ${formatDigest(snapshot)} into the runtime's cache: ${why}`);
    }
  }

  /**
   * Run the cell on `worker` and hand the worker back to the pool once it is idle again. Resolves with the
   * worker's done, or the final failure; on a cancel that as soon as the cell has stopped (the KeyboardInterrupt
   * error), without waiting for the worker to capture a state nobody will fetch.
   */
  private runOnWorker(worker: WorkerProcess, snapshot: Digest, fetched: Fetched, packages: Prepared): Promise<Outcome> {
    const session = this.assignment.session;
    return new Promise((resolve) => {
      let settled = false;
      let healed = false;
      const settle = (outcome: Outcome): void => {
        if (settled) return;
        settled = true;
        resolve(outcome);
      };
      const onEvent = (e: WorkerEvent): void => {
        if (e.runId !== this.runId) return;
        const { kind } = e;
        if (kind.case === 'failed' && kind.value.corruptBlob !== undefined && !healed && !this.stop) {
          healed = true;
          const failed = kind.value;
          void this.heal(worker, parseDigest(failed.corruptBlob), fetched).then(
            () => send(),
            (err: Error) =>
              onEvent({
                ...e,
                kind: { case: 'failed', value: { ...failed, corruptBlob: undefined, message: `${failed.message}; fetching it again failed: ${err.message}` } },
              }),
          );
          return;
        }
        if (kind.case === 'done' || kind.case === 'failed') {
          cleanup();
          // A cell that caught the interrupt and finished still ends with Done, as it would locally.
          if (kind.case === 'done' && !(this.stop && kind.value.status !== 'ok')) {
            const done = kind.value;
            // Taken while the worker's space still exists: the pool may end the worker once it is released.
            void this.takeResult(worker, done).then(
              (upload) => settle({ done, upload }),
              (err: Error) => {
                const message = `could not upload the snapshot the cell left: ${err.message}`;
                settle({ final: { code: 'upload_failed', message } });
              },
            ).finally(() => this.deps.pool.release(worker, session, true, this.warmGraceMs));
            return;
          }
          this.deps.pool.release(worker, session, true, this.warmGraceMs);
          if (this.stop) return settle({ final: this.stop });
          if (kind.case === 'done') return settle({ final: { code: 'cancelled', message: 'the cell stopped on the interrupt' } });
          return settle({ final: { code: RunFailure_Code[kind.value.code] ?? 'worker_failed', message: kind.value.message } });
        }
        if (settled) return;
        if (kind.case === 'restored') return this.deps.pool.replenish();
        const event = toCellEvent(e);
        if (event) this.relay(worker, event);
        if (this.stop && kind.case === 'error' && kind.value.ename === 'KeyboardInterrupt') settle({ final: this.stop });
      };
      const onOutput = (name: string, text: string): void => {
        if (!settled) this.relay(worker, { stream: { name, text } });
      };
      const onExit = (why: string): void => {
        cleanup();
        this.deps.pool.release(worker, session, false, this.warmGraceMs);
        if (this.stop) return settle({ final: this.stop });
        const message = `the worker (pid ${worker.pid}) ${why} while running the cell${worker.stderrHint()}`;
        settle({ final: { code: 'worker_died', message } });
      };
      const cleanup = (): void => {
        worker.off('event', onEvent);
        worker.off('output', onOutput);
        worker.off('exit', onExit);
        worker.resume();
      };
      worker.on('event', onEvent);
      worker.on('output', onOutput);
      worker.once('exit', onExit);
      if (!worker.alive) return onExit('had exited');
      worker.runId = this.runId;
      const { code, lazy, reach } = this.assignment;
      const overlay = packages.overlay === null ? undefined : this.deps.sandbox.packagesView(packages.overlay);
      const send = (): void =>
        worker.send(
          create(RunCellSchema, {
            runId: this.runId,
            code,
            snapshot: formatDigest(snapshot),
            reach: lazy ? { values: reach.map((n) => ({ kind: { case: 'stringValue' as const, value: n } })) } : undefined,
            packages: { overlay, notes: packages.notes },
          }),
        );
      send();
      // Cancelled while the run was being handed over: the worker holds the SIGINT until its cell starts.
      if (this.stop) this.interrupt(worker);
    });
  }

  /**
   * The worker found a handed-over blob corrupt (the cache entry behind it was damaged): drop every corrupt entry
   * of the run's blobs, fetch them again and hand them over anew, so the run is retried once on sound bytes.
   */
  private async heal(worker: WorkerProcess, reported: Digest, fetched: Fetched): Promise<void> {
    const { cache, gateway } = this.deps;
    const corrupt = await cache.dropCorrupt(fetched.given);
    const again = corrupt.some((d) => formatDigest(d) === formatDigest(reported)) ? corrupt : [...corrupt, reported];
    await cache.fetchMissing(gateway, again, undefined, this.abort.signal);
    await cache.give(worker.space, again, true);
  }

  /** Pass one event on; while the gateway stream is backed up, stop reading the worker (it blocks on fd 3). */
  private relay(worker: WorkerProcess, event: Omit<CellEvent, 'runId'>): void {
    void this.emit(event);
    if (this.sink.congested) {
      worker.pause();
      void this.sink.drained().then(() => worker.resume());
    }
  }

  /**
   * What the worker wrote enters the cache only verified, its manifest first (then parsed from the verified copy);
   * returns the blobs to upload. The chunks of the run's own snapshot need no asking: the gateway checked, before
   * assigning the run, that they are stored and readable by the run's user (and it checks the whole new snapshot
   * again on Done). A warm hop that changed little so asks about a few digests instead of every chunk of the state.
   */
  private async takeResult(worker: WorkerProcess, done: WorkerDone): Promise<Digest[]> {
    const { cache } = this.deps;
    const snapshot = parseDigest(done.snapshot);
    await cache.take(worker.space, snapshot);
    const fresh = (ds: Digest[]): Digest[] => ds.filter((d) => !this.inputChunks.has(formatDigest(d)));
    const chunks = fresh(await cache.manifestChunks(snapshot));
    for (const d of chunks) await cache.take(worker.space, d);
    // The file tree is read level by level from verified copies: each directory blob is taken before it is parsed.
    const files = fresh(
      await treeBlobs(cache, snapshot, async (level) => {
        for (const d of fresh(level)) await cache.take(worker.space, d);
      }),
    );
    for (const d of files) await cache.take(worker.space, d);
    return [...chunks, ...files];
  }

  private async finishDone(done: WorkerDone, chunks: Digest[], fetched: Fetched, started: number): Promise<void> {
    let snapshot: Digest;
    const t0 = Date.now();
    try {
      snapshot = parseDigest(done.snapshot);
      const progress = (d: number, total: number): void => {
        void this.emit({ progress: { phase: 'upload', doneBytes: d, totalBytes: total } });
      };
      await this.deps.cache.upload(this.deps.gateway, chunks, snapshot, progress);
    } catch (err) {
      return this.fail('upload_failed', `could not upload the snapshot the cell left: ${(err as Error).message}`);
    }
    const timings = {
      ...(done.timings === undefined ? {} : (toJson(RunTimingsSchema, done.timings, { useProtoFieldName: true }) as object)),
      fetch_s: fetched.seconds,
      fetch_bytes: fetched.bytes,
      upload_s: (Date.now() - t0) / 1000,
      total_s: (Date.now() - started) / 1000,
    };
    this.finished = true;
    await this.emit({
      done: {
        status: done.status === 'ok' ? 'ok' : 'error',
        snapshot: { hash: snapshot.hash, sizeBytes: snapshot.sizeBytes },
        timingsJson: JSON.stringify(timings),
      },
    });
  }

  private async fail(code: string, message: string): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await this.emit({ failed: { code, message } });
  }

  private emit(event: Omit<CellEvent, 'runId'>): Promise<void> {
    return this.sink.send({ runId: this.runId, ...event });
  }
}

/** stream/display/result/error from the worker → the CellEvent the gateway relays. */
export function toCellEvent(e: WorkerEvent): Omit<CellEvent, 'runId'> | null {
  const { kind } = e;
  switch (kind.case) {
    case 'stream':
      return { stream: { name: kind.value.name, text: kind.value.text } };
    case 'display':
    case 'result': {
      // gRPC carries the MIME bundle as JSON text (Display), the worker's pipe as a JSON object (Output).
      const display = { dataJson: JSON.stringify(kind.value.data ?? {}), metadataJson: JSON.stringify(kind.value.metadata ?? {}) };
      return kind.case === 'display' ? { display } : { result: display };
    }
    case 'error': {
      const { ename, evalue, traceback, etype } = kind.value;
      return { error: { ename, evalue, traceback, etype } };
    }
    default:
      return null;
  }
}
