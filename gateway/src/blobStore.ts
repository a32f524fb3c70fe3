// Content-addressed blob store. Every put is verified against its digest; blobs are immutable once stored.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { LRUCache } from 'lru-cache';
import { Digest, digestOf, formatDigest } from '@kernelhop/kernel-snapshot';
import type { DirectReadBlobStore } from './stores/directReads.js';

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

/** How many blobs DiskBlobStore remembers as present (about 100 bytes each); the least used cost a stat again. */
const PRESENT_MAX = 1_000_000;

/**
 * Layout `<root>/<hash[0:2]>/<hash>`, as a runtime's chunk cache (ARCHITECTURE.md). A runtime on this host copies
 * the files of its runs' blobs itself, by the file: URLs readUrl gives; any other reads them through the gateway.
 */
export class DiskBlobStore implements SweepableBlobStore, DirectReadBlobStore {
  /**
   * Hashes of blobs known to be on disk, so a warm hop's checks (thousands of chunks, three times a hop) do not
   * stat each file again. Only this process removes blobs, through removeIfOlder: a stat that overlaps a removal
   * in any way is not remembered.
   */
  private readonly present = new LRUCache<string, true>({ max: PRESENT_MAX });
  /** Removals started so far, and those not yet finished. */
  private removalsStarted = 0;
  private removalsRunning = 0;

  private readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  /** A new store's root is the gateway user's alone: other local users read a blob only through a grant. */
  static async open(root: string): Promise<DiskBlobStore> {
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    return new DiskBlobStore(root);
  }

  /** The blob's file, for a runtime that sees this disk; it verifies what it reads, as from any URL. */
  async readUrl(digest: Digest): Promise<string> {
    return pathToFileURL(this.pathOf(digest)).href;
  }

  pathOf(digest: Digest): string {
    return path.join(this.root, digest.hash.slice(0, 2), digest.hash);
  }

  async has(digest: Digest): Promise<boolean> {
    if (this.present.has(digest.hash)) return true;
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
    const unknown = [...unique.values()].filter((d) => !this.present.has(d.hash));
    const present = await Promise.all(unknown.map((d) => this.has(d)));
    return unknown.filter((_, i) => !present[i]);
  }

  async put(digest: Digest, data: Uint8Array): Promise<PutResult> {
    const verdict = verifyBlob(digest, data);
    if (verdict.code !== 'ok') return verdict;
    if (await this.has(digest)) {
      // Touched so gc's grace counts from this put: a blob someone just uploaded again is about to be named.
      const now = new Date();
      await fsp.utimes(this.pathOf(digest), now, now).catch(() => undefined);
      if (await this.has(digest)) return verdict;
    }
    const final = this.pathOf(digest);
    const dir = path.dirname(final);
    await fsp.mkdir(dir, { recursive: true });
    // A unique temporary name in the same directory: concurrent puts of one blob each write their own file and the
    // renames (atomic on one file system) leave identical bytes whichever lands last.
    const tmp = path.join(dir, `.${digest.hash}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    // Read-only: a blob is immutable, and nothing that opens this file (a runtime beside the gateway) may change it.
    const fh = await fsp.open(tmp, 'wx', 0o444);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } catch (e) {
      await fh.close();
      await fsp.rm(tmp, { force: true });
      throw e;
    }
    await fh.close();
    try {
      await fsp.rename(tmp, final);
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
    await syncDir(dir);
    return verdict;
  }

  async get(digest: Digest): Promise<Buffer | undefined> {
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
      let got = 0;
      for (;;) {
        const { bytesRead } = await fh.read(data, got, data.length - got, got);
        if (bytesRead === 0) break;
        got += bytesRead;
        if (got === data.length) break;
      }
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
  }

  async removeStaleTemporaries(notAfterMs: number): Promise<number> {
    let removed = 0;
    for (const dir of await fsp.readdir(this.root)) {
      if (!/^[0-9a-f]{2}$/.test(dir)) continue;
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
