// Garbage collection of the blob store: mark from snapshots and runs, sweep the rest ("Snapshots, users and trust").
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { SweepableBlobStore } from './blobStore.js';
import { checkSnapshot } from './snapshotCheck.js';
import { SnapshotStore } from './snapshotStore.js';

/** Runs one task at a time: gc against snapshot saves, so a save never names a blob gc is sweeping. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

export interface GcReport {
  blobs_kept: number;
  blobs_removed: number;
  bytes_freed: number;
  holds_dropped: number;
  temporaries_removed: number;
  duration_ms: number;
}

/** Blobs younger than this are never collected: they may belong to a snapshot being written. */
export const DEFAULT_GRACE_MS = 15 * 60 * 1000;

export class Collector {
  constructor(
    private readonly store: SweepableBlobStore,
    private readonly snapshots: SnapshotStore,
    /** Manifests of runs not yet finished: their blobs are in use though no snapshot names them. */
    private readonly inFlight: () => Digest[],
    readonly lock: Mutex,
  ) {}

  collect(graceMs: number): Promise<GcReport> {
    return this.lock.run(async () => {
      const started = Date.now();
      const cutoff = started - graceMs;
      // Mark: everything a saved snapshot names (a saved snapshot is its own ref; named refs point at those),
      // everything a run in flight needs, and every blob someone holds within the grace.
      const holdsDropped = await this.snapshots.dropStaleHolds(cutoff);
      const live = await this.snapshots.liveDigests();
      for (const d of await this.snapshots.heldDigests()) live.add(d);
      for (const manifest of this.inFlight()) {
        live.add(formatDigest(manifest));
        const check = await checkSnapshot(this.store, manifest);
        if (check.ok) for (const c of check.chunks) live.add(formatDigest(c));
      }
      // Sweep: what is not marked and older than the grace (checked again per file, right before unlinking).
      let kept = 0;
      let removed = 0;
      let freed = 0;
      for await (const { digest, mtimeMs } of this.store.list()) {
        if (live.has(formatDigest(digest)) || mtimeMs >= cutoff) {
          kept += 1;
          continue;
        }
        if (await this.store.removeIfOlder(digest, cutoff)) {
          removed += 1;
          freed += digest.sizeBytes;
        } else {
          kept += 1;
        }
      }
      await this.store.compact();
      const temporaries = await this.store.removeStaleTemporaries(cutoff);
      return {
        blobs_kept: kept,
        blobs_removed: removed,
        bytes_freed: freed,
        holds_dropped: holdsDropped,
        temporaries_removed: temporaries,
        duration_ms: Date.now() - started,
      };
    });
  }
}
