// Content-addressed blob store. Every put is verified against its digest; blobs are immutable once stored.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { LRUCache } from 'lru-cache';
import { Digest, digestOf, formatDigest } from '@kernelhop/kernel-snapshot';
import type { Log } from './log.js';
import type { BlobLocation, DirectReadBlobStore } from './stores/directReads.js';
import { isPackName, Pack, PackDamaged, PackEntry, packIdOf, packTrailer, PACKS_FOLDER, readPackIndex } from './stores/packs.js';

/** Largest single blob accepted: chunks are at most 1 MiB, so this only bounds manifests. */
export const MAX_BLOB_BYTES = 48 * 1024 * 1024;

export type PutCode = 'ok' | 'digest_mismatch' | 'too_large' | 'quota_exceeded';

export interface PutResult {
  code: PutCode;
  message: string;
}

export interface BlobStore {
  /** The digests of `digests` that are not stored, in the given order, each once. */
  findMissing(digests: readonly Digest[]): Promise<Digest[]>;
  /** Stores `data` under `digest` after checking that the bytes hash to it; never trusts the caller. */
  put(digest: Digest, data: Uint8Array): Promise<PutResult>;
  /** Puts a batch (one request's blobs), each checked as put checks it; a result per item, in order. */
  putMany(items: ReadonlyArray<{ digest: Digest; data: Uint8Array }>): Promise<PutResult[]>;
  /** The blob's bytes, or undefined when it is not stored. */
  get(digest: Digest): Promise<Buffer | undefined>;
  has(digest: Digest): Promise<boolean>;
}

/** A store gc can sweep: list what is there, remove what nothing needs. */
export interface SweepableBlobStore extends BlobStore {
  list(): AsyncIterable<{ digest: Digest; mtimeMs: number }>;
  /** Removes the blob unless it was written or touched at or after `notAfterMs`; true when removed. */
  removeIfOlder(digest: Digest, notAfterMs: number): Promise<boolean>;
  /** Removes temporaries older than `notAfterMs` (left by puts a crash cut short); returns how many. */
  removeStaleTemporaries(notAfterMs: number): Promise<number>;
  /** Gives back space removals left in use (the directory store's packs); after a sweep, under gc's lock. */
  compact(): Promise<void>;
}

/**
 * Bytes verifyBlob found good, with the digest they hash to. A put is checked twice on its way in (the user's view
 * checks before recording a hold, the store before writing); the second check of the same bytes object is a lookup
 * instead of a second BLAKE3 pass, which was half the gateway's CPU on uploads. Safe because the gateway never
 * writes into a buffer it received: the bytes are those that were hashed.
 */
const verified = new WeakMap<Uint8Array, string>();

/** Verifies bytes against a digest; the one place both APIs decide whether a blob is acceptable. */
export function verifyBlob(digest: Digest, data: Uint8Array): PutResult {
  if (data.byteLength > MAX_BLOB_BYTES) {
    return { code: 'too_large', message: `blob is ${data.byteLength} bytes; at most ${MAX_BLOB_BYTES} are accepted` };
  }
  if (data.byteLength !== digest.sizeBytes) {
    return {
      code: 'digest_mismatch',
      message: `blob has ${data.byteLength} bytes but its digest says ${digest.sizeBytes}; nothing stored`,
    };
  }
  if (verified.get(data) === digest.hash) return { code: 'ok', message: '' };
  const actual = digestOf(data);
  if (actual.hash !== digest.hash) {
    return {
      code: 'digest_mismatch',
      message: `blob hashes to ${formatDigest(actual)}, not ${formatDigest(digest)}; nothing stored`,
    };
  }
  verified.set(data, digest.hash);
  return { code: 'ok', message: '' };
}

/** How many loose blobs DiskBlobStore remembers as present (about 100 bytes each); the least used cost a stat again. */
const PRESENT_MAX = 1_000_000;

/** gc rewrites a pack once this share of its bytes is blobs nothing needs; below it, they stay until more die. */
const REWRITE_DEAD_SHARE = 0.25;

interface PackedBlob {
  pack: Pack;
  offset: number;
  size: number;
}

/**
 * A batch is written as one pack, `<root>/packs/<id>.pack` (stores/packs.ts); a blob written alone by an earlier
 * version is a loose file `<root>/<hash[0:2]>/<hash>`, as in a runtime's chunk cache, and is read as before. A
 * runtime on this host copies its runs' blobs itself, by the file: URLs and offsets readUrl gives; any other reads
 * them through the gateway.
 */
export class DiskBlobStore implements SweepableBlobStore, DirectReadBlobStore {
  /**
   * Hashes of loose blobs known to be on disk, so a warm hop's checks (thousands of chunks, three times a hop) do
   * not stat each file again. Only this process removes blobs, through removeIfOlder: a stat that overlaps a
   * removal in any way is not remembered.
   */
  private readonly present = new LRUCache<string, true>({ max: PRESENT_MAX });
  /** Removals started so far, and those not yet finished. */
  private removalsStarted = 0;
  private removalsRunning = 0;
  /** Where each packed blob lies: read from the packs' trailers at open, kept in step by every write and removal. */
  private readonly packed = new Map<string, PackedBlob>();
  private readonly packs = new Map<string, Pack>();
  /** Blobs whose pack is being written, and that write. */
  private readonly writing = new Map<string, Promise<void>>();

  private readonly root: string;
  private readonly packsDir: string;

  private constructor(root: string) {
    this.root = path.resolve(root);
    this.packsDir = path.join(this.root, PACKS_FOLDER);
  }

  /**
   * A new store's root is the gateway user's alone: other local users read a blob only through a grant. A pack
   * whose trailer is damaged is left on disk and out of the index: its blobs are missing, so clients upload them
   * again and snapshots naming them fail their check by name.
   */
  static async open(root: string, log: Log = () => undefined): Promise<DiskBlobStore> {
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    const store = new DiskBlobStore(root);
    await fsp.mkdir(store.packsDir, { recursive: true, mode: 0o700 });
    for (const name of await fsp.readdir(store.packsDir)) {
      if (!isPackName(name)) continue;
      const file = path.join(store.packsDir, name);
      try {
        const { entries, blobBytes, mtimeMs } = await readPackIndex(file);
        store.register({ id: packIdOf(file), file, mtimeMs, bytes: blobBytes, deadBytes: 0, live: 0 }, entries, false);
      } catch (e) {
        if (!(e instanceof PackDamaged)) throw e;
        log(`blob store: ${e.message}; its blobs count as missing (move the file away once nothing needs it)`);
      }
    }
    return store;
  }

  /** Where the blob's bytes lie, for a runtime that sees this disk; it verifies what it reads, as from any URL. */
  async readUrl(digest: Digest): Promise<BlobLocation> {
    const at = this.packedAt(digest);
    if (at) return { url: pathToFileURL(at.pack.file).href, offset: at.offset };
    return { url: pathToFileURL(this.pathOf(digest)).href, offset: 0 };
  }

  /** The loose file a blob would have (stores written before packs, tests that damage one). */
  pathOf(digest: Digest): string {
    return path.join(this.root, digest.hash.slice(0, 2), digest.hash);
  }

  async has(digest: Digest): Promise<boolean> {
    if (this.packedAt(digest) || this.present.has(digest.hash)) return true;
    const started = this.removalsRunning === 0 ? this.removalsStarted : -1;
    try {
      const st = await fsp.stat(this.pathOf(digest));
      const ok = st.isFile() && st.size === digest.sizeBytes;
      if (ok && started === this.removalsStarted && this.removalsRunning === 0) this.present.set(digest.hash, true);
      return ok;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const unique = new Map<string, Digest>();
    for (const d of digests) unique.set(formatDigest(d), d);
    // Only the blobs not known to be present cost a stat (and a promise each).
    const unknown = [...unique.values()].filter((d) => !this.packedAt(d) && !this.present.has(d.hash));
    const present = await Promise.all(unknown.map((d) => this.has(d)));
    return unknown.filter((_, i) => !present[i]);
  }

  async put(digest: Digest, data: Uint8Array): Promise<PutResult> {
    return (await this.putMany([{ digest, data }]))[0] as PutResult;
  }

  /** The batch's new blobs in one pack, made durable (file and folder fsynced) before any is answered stored. */
  async putMany(items: ReadonlyArray<{ digest: Digest; data: Uint8Array }>): Promise<PutResult[]> {
    const verdicts = items.map((it) => verifyBlob(it.digest, it.data));
    const fresh = new Map<string, { digest: Digest; data: Uint8Array }>();
    await Promise.all(
      items.map(async (it, i) => {
        if (verdicts[i]?.code !== 'ok' || fresh.has(it.digest.hash)) return;
        // Touched so gc's grace counts from this put: a blob someone just uploaded again is about to be named.
        if ((await this.has(it.digest)) && (await this.touch(it.digest))) return;
        fresh.set(it.digest.hash, it);
      }),
    );
    // A blob another put is writing now is waited for, not written twice (its pack would hold dead bytes).
    const waits: Promise<void>[] = [];
    const mine = [...fresh.values()].filter((it) => {
      const other = this.writing.get(it.digest.hash);
      if (other !== undefined) waits.push(other);
      return other === undefined;
    });
    if (mine.length > 0) {
      const written = this.writePack(mine);
      for (const it of mine) this.writing.set(it.digest.hash, written);
      const settled = (): void => {
        for (const it of mine) if (this.writing.get(it.digest.hash) === written) this.writing.delete(it.digest.hash);
      };
      written.then(settled, settled);
      waits.push(written);
    }
    await Promise.all(waits);
    return verdicts;
  }

  async get(digest: Digest): Promise<Buffer | undefined> {
    const at = this.packedAt(digest);
    if (at) {
      try {
        return await readRange(at.pack.file, at.offset, at.size);
      } catch (e) {
        // gc rewrote the pack since the lookup: the index now says where the blob went, or that it is gone.
        if (isNotFound(e) && this.packed.get(digest.hash) !== at) return this.get(digest);
        throw e;
      }
    }
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.pathOf(digest), 'r');
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
    try {
      // Read straight into a buffer of the size the digest names: readFile reads in pieces and joins them, a copy
      // of every byte served. One byte more is read to tell a longer file from a complete one.
      const data = Buffer.allocUnsafe(digest.sizeBytes + 1);
      const got = await readFully(fh, data, 0);
      // A truncated or longer file is as good as missing; callers verify hashes themselves.
      return got === digest.sizeBytes ? data.subarray(0, got) : undefined;
    } finally {
      await fh.close();
    }
  }

  async *list(): AsyncIterable<{ digest: Digest; mtimeMs: number }> {
    for (const dir of await fsp.readdir(this.root)) {
      if (!/^[0-9a-f]{2}$/.test(dir)) continue;
      for (const name of await fsp.readdir(path.join(this.root, dir))) {
        if (!/^[0-9a-f]{64}$/.test(name)) continue; // temporaries of puts in flight
        try {
          const st = await fsp.stat(path.join(this.root, dir, name));
          yield { digest: { hash: name, sizeBytes: st.size }, mtimeMs: st.mtimeMs };
        } catch (e) {
          if (!isNotFound(e)) throw e;
        }
      }
    }
    for (const [hash, at] of [...this.packed]) yield { digest: { hash, sizeBytes: at.size }, mtimeMs: at.pack.mtimeMs };
  }

  async removeStaleTemporaries(notAfterMs: number): Promise<number> {
    let removed = 0;
    for (const dir of [...(await fsp.readdir(this.root)).filter((d) => /^[0-9a-f]{2}$/.test(d)), PACKS_FOLDER]) {
      for (const name of await fsp.readdir(path.join(this.root, dir))) {
        if (!name.endsWith('.tmp')) continue;
        const file = path.join(this.root, dir, name);
        try {
          if ((await fsp.stat(file)).mtimeMs >= notAfterMs) continue;
          await fsp.unlink(file);
          removed += 1;
        } catch (e) {
          if (!isNotFound(e)) throw e;
        }
      }
    }
    return removed;
  }

  async removeIfOlder(digest: Digest, notAfterMs: number): Promise<boolean> {
    const at = this.packed.get(digest.hash);
    if (at) {
      // A put that touched the pack since the listing keeps it (and every blob in it).
      if (at.pack.mtimeMs >= notAfterMs) return false;
      this.unindex(digest.hash, at);
      if (at.pack.live === 0) await this.dropPack(at.pack);
      return true;
    }
    const file = this.pathOf(digest);
    this.removalsStarted++;
    this.removalsRunning++;
    this.present.delete(digest.hash);
    try {
      // Checked again right before unlinking: a put that touched the file since the listing keeps it.
      if ((await fsp.stat(file)).mtimeMs >= notAfterMs) return false;
      await fsp.unlink(file);
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    } finally {
      this.removalsRunning--;
    }
  }

  /**
   * Gives back the disk of removed blobs that still sit in packs with live ones: a pack with at least
   * REWRITE_DEAD_SHARE of its bytes dead is rewritten with its live blobs (each verified on the way), then removed.
   * Runs under gc's lock; puts and reads go on meanwhile (a read of the old pack follows the index to the new one).
   */
  async compact(): Promise<void> {
    for (const pack of [...this.packs.values()]) {
      if (pack.live === 0 || pack.deadBytes < pack.bytes * REWRITE_DEAD_SHARE) continue;
      const live = [...this.packed].filter(([, at]) => at.pack === pack);
      const blobs: { digest: Digest; data: Uint8Array }[] = [];
      for (const [hash, at] of live) {
        const digest = { hash, sizeBytes: at.size };
        const data = await readRange(pack.file, at.offset, at.size);
        // Damaged bytes are not carried on: out of the index, the blob is missing and is uploaded again.
        if (data !== undefined && verifyBlob(digest, data).code === 'ok') blobs.push({ digest, data });
      }
      if (blobs.length > 0) await this.writePack(blobs, pack);
      for (const [hash, at] of live) if (this.packed.get(hash) === at) this.unindex(hash, at);
      await this.dropPack(pack);
    }
  }

  private packedAt(digest: Digest): PackedBlob | undefined {
    const at = this.packed.get(digest.hash);
    return at !== undefined && at.size === digest.sizeBytes ? at : undefined;
  }

  /** Moves gc's grace of an existing blob to now; false when it vanished meanwhile (then it is written anew). */
  private async touch(digest: Digest): Promise<boolean> {
    const now = new Date();
    const at = this.packedAt(digest);
    if (at) {
      at.pack.mtimeMs = now.getTime();
      await fsp.utimes(at.pack.file, now, now).catch(() => undefined);
    } else {
      await fsp.utimes(this.pathOf(digest), now, now).catch(() => undefined);
    }
    return this.has(digest);
  }

  /**
   * Writes the blobs as a new pack: a temporary in the packs folder, fsynced, renamed, and the folder fsynced, so a
   * crash at any point leaves either no pack or a whole one. `replacing` is the pack a compaction empties: its
   * blobs' entries move to the new one.
   */
  private async writePack(blobs: ReadonlyArray<{ digest: Digest; data: Uint8Array }>, replacing?: Pack): Promise<void> {
    const id = randomBytes(16).toString('hex');
    const tmp = path.join(this.packsDir, `.${id}.tmp`);
    const file = path.join(this.packsDir, `${id}.pack`);
    let offset = 0;
    const entries = blobs.map(({ digest, data }) => {
      const e = { hash: digest.hash, offset, size: data.byteLength };
      offset += data.byteLength;
      return e;
    });
    const parts = [...blobs.map((b) => b.data), packTrailer(entries)];
    const want = parts.reduce((n, p) => n + p.byteLength, 0);
    // Read-only: a pack is immutable, and nothing that opens it (a runtime beside the gateway) may change it.
    const fh = await fsp.open(tmp, 'wx', 0o444);
    try {
      await writeAll(fh, parts, want);
      await fh.sync();
      await fh.close();
      await fsp.rename(tmp, file);
    } catch (e) {
      await fh.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true });
      throw e;
    }
    await syncDir(this.packsDir);
    this.register({ id, file, mtimeMs: Date.now(), bytes: offset, deadBytes: 0, live: 0 }, entries, replacing);
  }

  /** Indexes a pack's entries; a blob already indexed elsewhere stays there (unless that is `replacing`). */
  private register(pack: Pack, entries: readonly PackEntry[], replacing: Pack | false | undefined): void {
    this.packs.set(pack.id, pack);
    for (const e of entries) {
      const old = this.packed.get(e.hash);
      if (old !== undefined && old.pack !== replacing) {
        pack.deadBytes += e.size;
        continue;
      }
      if (old !== undefined) this.unindex(e.hash, old);
      this.packed.set(e.hash, { pack, offset: e.offset, size: e.size });
      pack.live += 1;
    }
  }

  private unindex(hash: string, at: PackedBlob): void {
    this.packed.delete(hash);
    at.pack.live -= 1;
    at.pack.deadBytes += at.size;
  }

  private async dropPack(pack: Pack): Promise<void> {
    this.packs.delete(pack.id);
    await fsp.unlink(pack.file).catch((e: unknown) => {
      if (!isNotFound(e)) throw e;
    });
  }
}

/**
 * Writes `parts` (`total` bytes) from the file's start. A write cut short (a disk filling up writes what fits) goes
 * on from where it stopped, so a full disk ends in the ENOSPC of the next write, not in a pack of fewer bytes.
 */
async function writeAll(fh: fsp.FileHandle, parts: Uint8Array[], total: number): Promise<void> {
  const written = (await fh.writev(parts)).bytesWritten;
  if (written === total) return;
  const rest = Buffer.concat(parts).subarray(written);
  for (let at = 0; at < rest.length; ) {
    const { bytesWritten } = await fh.write(rest, at, rest.length - at, written + at);
    at += bytesWritten;
  }
}

/** The `size` bytes at `offset` of `file` (a pack's blob); undefined when the file ends first (a damaged pack). */
async function readRange(file: string, offset: number, size: number): Promise<Buffer | undefined> {
  const fh = await fsp.open(file, 'r');
  try {
    const data = Buffer.allocUnsafe(size);
    return (await readFully(fh, data, offset)) === size ? data : undefined;
  } finally {
    await fh.close();
  }
}

/** Reads from `position` until `buffer` is full or the file ends; how many bytes came. */
async function readFully(fh: fsp.FileHandle, buffer: Buffer, position: number): Promise<number> {
  let got = 0;
  while (got < buffer.length) {
    const { bytesRead } = await fh.read(buffer, got, buffer.length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/** Makes the rename durable; not every platform lets a directory be fsynced, which only weakens durability. */
async function syncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    // Best effort by design.
  } finally {
    await fh?.close();
  }
}

function isNotFound(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as NodeJS.ErrnoException).code === 'ENOENT';
}
