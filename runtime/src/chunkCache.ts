// The runtime's local blob cache: <root>/<hash[0:2]>/<hash>, the layout of the gateway's store and of
// kernelhop_snapshot.DirectoryBlobStore. Workers never see it: a run's blobs are handed to its worker (hard links
// into the worker's read-only `given` directory), and what the worker captured is verified before it enters.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LRUCache } from 'lru-cache';
import {
  Digest,
  digestEquals,
  digestOf,
  formatDigest,
  Manifest,
  manifestBlobDigests,
  parseManifestBytes,
  reachedBlobDigests,
} from '@kernelhop/kernel-snapshot';
import { BlobSink, readBlobs } from './blobReads.js';
import { GatewayClient } from './gatewayClient.js';
import type { PbDigest } from './proto.js';
import type { WorkerSpace } from './sandbox.js';

export class BlobError extends Error {
  override name = 'BlobError';
}

/** A cached blob whose bytes no longer match its digest (a damaged disk, or someone wrote it); it was dropped. */
export class CorruptCacheEntry extends BlobError {
  override name = 'CorruptCacheEntry';
  constructor(
    readonly digest: Digest,
    message: string,
  ) {
    super(message);
  }
}

export type ProgressFn = (doneBytes: number, totalBytes: number) => void;

const toPb = (d: Digest): PbDigest => ({ hash: d.hash, sizeBytes: d.sizeBytes });
const fromPb = (d: PbDigest | null | undefined): Digest => ({ hash: d?.hash ?? '', sizeBytes: Number(d?.sizeBytes ?? 0) });

/** In the cache's root from its making: gone, the cache was wiped and nothing remembered of it holds. */
const CACHE_MARKER = '.kernelhop-cache';
/** How many parsed manifests a ChunkCache keeps. */
const RECENT_MANIFESTS = 8;
/** Buffers adopt reads blobs into: one holds a chunk (at most 1 MiB); larger blobs get a buffer of their own. */
const READ_BUFFER_BYTES = 1024 * 1024;
const READ_BUFFERS_KEPT = 64;

export class ChunkCache implements BlobSink {
  /** Fan-out directories known to exist: a mkdir per blob written cost more than the write itself. */
  private readonly dirs = new Set<string>();
  /**
   * Hashes of blobs seen complete on disk, so a warm hop does not stat every chunk of the state again. Sound
   * because nothing removes a cached blob but a wipe of the whole cache, which `sound()` notices; whatever comes to
   * evict blobs must forget them here too.
   */
  private readonly present = new Set<string>();
  private readonly readBuffers: Buffer[] = [];
  private readonly recentManifests = new LRUCache<string, { manifest: Manifest; chunks: Digest[] }>({
    max: RECENT_MANIFESTS,
  });

  constructor(readonly root: string) {
    this.sound();
  }

  /**
   * Makes the cache's root (again, after a wipe: `rm -rf` of it or of what it holds, under a running runtime) and
   * forgets what was remembered of its contents then: a marker file made with the root says it is the same.
   */
  private sound(): void {
    const marker = path.join(this.root, CACHE_MARKER);
    if (fs.existsSync(marker)) return;
    this.present.clear();
    this.dirs.clear();
    this.recentManifests.clear();
    // Only the runtime's user enters: a sandboxed worker has another uid, and this is not in its view anyway.
    fs.mkdirSync(this.root, { recursive: true, mode: 0o700 });
    fs.chmodSync(this.root, 0o700);
    fs.writeFileSync(marker, '');
  }

  pathOf(d: Digest): string {
    return path.join(this.root, d.hash.slice(0, 2), d.hash);
  }

  has(d: Digest): boolean {
    if (this.present.has(d.hash)) return true;
    try {
      const ok = fs.statSync(this.pathOf(d)).size === d.sizeBytes;
      if (ok) this.present.add(d.hash);
      return ok;
    } catch {
      return false;
    }
  }

  /** The chunks a cached manifest names. The last few stay parsed: a warm hop's input is the last hop's result. */
  async manifestChunks(d: Digest): Promise<Digest[]> {
    return (await this.parsed(d)).chunks;
  }

  /** A cached manifest, parsed. */
  async manifest(d: Digest): Promise<Manifest> {
    return (await this.parsed(d)).manifest;
  }

  /** The chunks of a cached manifest's groups that hold one of `names` (lazy restore). */
  async reachedChunks(d: Digest, names: ReadonlySet<string>): Promise<Digest[]> {
    return reachedBlobDigests((await this.parsed(d)).manifest, names);
  }

  private async parsed(d: Digest): Promise<{ manifest: Manifest; chunks: Digest[] }> {
    const key = formatDigest(d);
    let entry = this.recentManifests.get(key);
    if (entry === undefined) {
      const manifest = parseManifestBytes(await this.read(d));
      entry = { manifest, chunks: manifestBlobDigests(manifest) };
      this.recentManifests.set(key, entry);
    }
    return entry;
  }

  /** A blob's verified bytes; a corrupt entry is dropped (so the next fetchMissing gets it again) and throws. */
  async read(d: Digest): Promise<Buffer> {
    const bytes = await fs.promises.readFile(this.pathOf(d));
    if (!digestEquals(digestOf(bytes), d)) {
      this.drop(d);
      throw new CorruptCacheEntry(d, `cached blob ${formatDigest(d)} at ${this.pathOf(d)} was corrupt (its bytes hash differently); dropped`);
    }
    return bytes;
  }

  /** Forget a blob and remove its file: the next fetchMissing fetches it again. */
  drop(d: Digest): void {
    this.present.delete(d.hash);
    this.recentManifests.delete(formatDigest(d));
    fs.rmSync(this.pathOf(d), { force: true });
  }

  /** Of `digests`, those whose cached bytes do not hash to their name (read again from disk), dropped. */
  async dropCorrupt(digests: Digest[]): Promise<Digest[]> {
    const corrupt: Digest[] = [];
    for (const d of unique(digests)) {
      try {
        await this.read(d);
      } catch (err) {
        if (err instanceof CorruptCacheEntry) corrupt.push(d);
        else if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    return corrupt;
  }

  /**
   * Hand `digests` to a worker: hard links into its read-only `given` directory (no copy; the worker cannot write
   * them, and sees no other blob of the cache). `relink` replaces links made before (a blob fetched again).
   */
  async give(space: WorkerSpace, digests: Digest[], relink = false): Promise<void> {
    for (const d of unique(digests)) {
      if (space.linked.has(d.hash) && !relink) continue;
      const dir = path.join(space.given, d.hash.slice(0, 2));
      await fs.promises.mkdir(dir, { recursive: true, mode: 0o755 });
      const target = path.join(dir, d.hash);
      await fs.promises.rm(target, { force: true });
      await fs.promises.link(this.pathOf(d), target);
      space.linked.add(d.hash);
    }
  }

  /**
   * Take a blob the worker wrote (<out>/<hash>) into the cache: read without following links or blocking on a
   * fifo, only a regular file of the right size, verified by digest; then removed from the worker's reach and
   * handed back to it as a link to the cache's copy. What a worker wrote is never served as it is.
   */
  async take(space: WorkerSpace, d: Digest): Promise<void> {
    if (space.linked.has(d.hash) && this.has(d)) return;
    const source = path.join(space.out, d.hash);
    let bytes: Buffer;
    try {
      const fh = await fs.promises.open(source, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
      try {
        const st = await fh.stat();
        if (!st.isFile() || st.size !== d.sizeBytes) {
          throw new BlobError(`the worker's blob ${formatDigest(d)} is not a regular file of ${d.sizeBytes} bytes`);
        }
        bytes = await fh.readFile();
      } finally {
        await fh.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new BlobError(`the worker's snapshot names blob ${formatDigest(d)}, which it neither wrote nor was given`);
      }
      throw err;
    }
    await this.write(d, bytes);
    await fs.promises.rm(source, { force: true });
    await this.give(space, [d], true);
  }

  /**
   * Verify, then write to a temporary name in the same directory and rename: never a torn blob under its name. No
   * fsync: this is a cache, whose readers verify every blob, so one a crash leaves damaged is fetched again.
   */
  async write(d: Digest, bytes: Buffer): Promise<void> {
    const actual = digestOf(bytes);
    if (!digestEquals(actual, d)) {
      throw new BlobError(`blob ${formatDigest(d)} arrived with the wrong content (its bytes are ${formatDigest(actual)})`);
    }
    await this.keep(d, bytes);
  }

  private async keep(d: Digest, bytes: Buffer): Promise<void> {
    const final = this.pathOf(d);
    await this.ensureDir(path.dirname(final));
    const tmp = this.temporary(final);
    const fh = await fs.promises.open(tmp, 'w');
    try {
      await fh.writeFile(bytes);
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, final);
    this.present.add(d.hash);
  }

  /**
   * Keep a blob from a file of this host (the gateway's store, when this runtime runs beside it): the blob's bytes
   * from `offset` (a pack holds many blobs) read into a reused buffer (fresh ones cost a page fault per 4 KiB),
   * verified as a fetched blob is, and written as a file of the cache's own, so that damage to either side does
   * not reach the other. False, and nothing kept, when the file is absent, unreadable or holds other bytes there.
   */
  async adopt(d: Digest, file: string, offset: number): Promise<boolean> {
    const reused = d.sizeBytes <= READ_BUFFER_BYTES ? this.readBuffers.pop() : undefined;
    const buffer = reused ?? Buffer.allocUnsafe(Math.max(d.sizeBytes, READ_BUFFER_BYTES));
    try {
      const bytes = buffer.subarray(0, d.sizeBytes);
      try {
        if ((await readAt(file, bytes, offset)) !== d.sizeBytes || !digestEquals(digestOf(bytes), d)) return false;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'EACCES' || code === 'EPERM' || code === 'EISDIR') return false;
        throw err;
      }
      await this.keep(d, bytes);
      return true;
    } finally {
      if (buffer.length === READ_BUFFER_BYTES && this.readBuffers.length < READ_BUFFERS_KEPT) this.readBuffers.push(buffer);
    }
  }

  private async ensureDir(dir: string): Promise<void> {
    if (!this.dirs.has(dir)) {
      await fs.promises.mkdir(dir, { recursive: true });
      this.dirs.add(dir);
    }
  }

  private temporary(final: string): string {
    return `${final}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  }

  /**
   * Fetch every blob of `digests` the cache lacks from the gateway; returns the bytes fetched. Batches of
   * the agreed batch bytes, the agreed number in flight: the gateway reads the next batch from its disk while this process
   * verifies and writes the last one, where one 32 MiB batch at a time left each side idle half the time.
   */
  async fetchMissing(
    gateway: GatewayClient,
    digests: Digest[],
    progress?: ProgressFn,
    signal?: AbortSignal,
  ): Promise<number> {
    this.sound();
    const missing = unique(digests).filter((d) => !this.has(d));
    const total = missing.reduce((n, d) => n + d.sizeBytes, 0);
    let done = 0;
    if (total > 0) progress?.(0, total);
    const { maxBatchBytes, maxBlobsInFlight } = gateway.agreed;
    await inParallel([...batches(missing, maxBatchBytes)], maxBlobsInFlight, async (batch) => {
      signal?.throwIfAborted();
      await readBlobs(gateway, batch, this, signal);
      done += batch.reduce((n, d) => n + d.sizeBytes, 0);
      progress?.(done, total);
    });
    return total;
  }

  /**
   * Upload the blobs of `digests` the gateway lacks, `last` after all others are stored (chunks before their
   * manifest); the chunks go as fetchMissing's do, several batches in flight.
   */
  async upload(gateway: GatewayClient, digests: Digest[], last: Digest, progress?: ProgressFn): Promise<number> {
    const missing = (await gateway.findMissingBlobs(unique([...digests, last]).map(toPb))).map(fromPb);
    const isLast = (d: Digest): boolean => digestEquals(d, last);
    const total = missing.reduce((n, d) => n + d.sizeBytes, 0);
    let done = 0;
    if (total > 0) progress?.(0, total);
    const send = async (batch: Digest[]): Promise<void> => {
      // Not verified here: the gateway verifies every blob it is given and refuses a corrupt one (INVALID_ARGUMENT),
      // so hashing first would only spend a second BLAKE3 pass on the same bytes.
      const requests = await Promise.all(
        batch.map(async (d) => ({ digest: toPb(d), data: await fs.promises.readFile(this.pathOf(d)) })),
      );
      const res = await gateway.batchUpdateBlobs(requests);
      for (const r of res.responses) {
        if (r.status && r.status.code !== 0) {
          const why = r.status.message || `status ${r.status.code}`;
          throw new BlobError(`the gateway refused blob ${formatDigest(fromPb(r.digest))}: ${why}`);
        }
      }
      done += batch.reduce((n, d) => n + d.sizeBytes, 0);
      progress?.(done, total);
    };
    const { maxBatchBytes, maxBlobsInFlight } = gateway.agreed;
    await inParallel([...batches(missing.filter((d) => !isLast(d)), maxBatchBytes)], maxBlobsInFlight, send);
    if (missing.some(isLast)) await send([last]);
    return total;
  }
}

/** Runs `fn` over `items`, at most `depth` at a time; the first failure rejects (after those in flight settle). */
async function inParallel<T>(items: T[], depth: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const lane = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(depth, items.length) }, lane));
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
}

function unique(digests: Digest[]): Digest[] {
  const seen = new Set<string>();
  return digests.filter((d) => {
    const key = formatDigest(d);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function* batches(digests: Digest[], limit: number): Generator<Digest[]> {
  let batch: Digest[] = [];
  let bytes = 0;
  for (const d of digests) {
    if (batch.length > 0 && bytes + d.sizeBytes > limit) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(d);
    bytes += d.sizeBytes;
  }
  if (batch.length > 0) yield batch;
}

/** Reads from `position` of `file` until `into` is full or the file ends; how many bytes came. */
async function readAt(file: string, into: Buffer, position: number): Promise<number> {
  const fh = await fs.promises.open(file, 'r');
  try {
    let got = 0;
    while (got < into.length) {
      const { bytesRead } = await fh.read(into, got, into.length - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got;
  } finally {
    await fh.close();
  }
}
