// Packs of the directory store (restic's design): the blobs of one batch in one file, written and fsynced once,
// where a file per blob cost an fsync and a directory fsync each (a third of this disk's speed for 256 KiB chunks,
// benchmarks/data_path.py). The pack ends with its own index, written before the rename that makes the pack
// visible, so every pack on disk describes itself and the store's index is rebuilt from the packs at start.
//
//   [blob 0][blob 1]...[entry 0]...[entry n-1][n: u32 LE][MAGIC]      entry: hash (32 bytes), offset, size (u64 LE)
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

const MAGIC = Buffer.from('KHPACK1\n', 'latin1');
const ENTRY_BYTES = 32 + 8 + 8;
const TAIL_BYTES = 4 + MAGIC.length;

export interface PackEntry {
  hash: string;
  offset: number;
  size: number;
}

/** A pack file as the store knows it; `live` counts the index entries that point into it. */
export interface Pack {
  id: string;
  file: string;
  /** The pack's file mtime: gc's grace counts from it, and a put of a blob already in the pack touches it. */
  mtimeMs: number;
  /** Bytes of blobs (the trailer aside), and of those the index no longer points to. */
  bytes: number;
  deadBytes: number;
  live: number;
}

export class PackDamaged extends Error {
  override name = 'PackDamaged';
}

/** The trailer that follows the blobs laid out in order, as `entries` says. */
export function packTrailer(entries: readonly PackEntry[]): Buffer {
  const out = Buffer.alloc(entries.length * ENTRY_BYTES + TAIL_BYTES);
  entries.forEach((e, i) => {
    const at = i * ENTRY_BYTES;
    out.write(e.hash, at, 32, 'hex');
    out.writeBigUInt64LE(BigInt(e.offset), at + 32);
    out.writeBigUInt64LE(BigInt(e.size), at + 40);
  });
  out.writeUInt32LE(entries.length, entries.length * ENTRY_BYTES);
  MAGIC.copy(out, out.length - MAGIC.length);
  return out;
}

/** The entries a pack's trailer lists, each checked to lie among the pack's blob bytes; PackDamaged otherwise. */
export async function readPackIndex(file: string): Promise<{ entries: PackEntry[]; blobBytes: number; mtimeMs: number }> {
  const fh = await fsp.open(file, 'r');
  try {
    const st = await fh.stat();
    const tail = Buffer.alloc(TAIL_BYTES);
    if (st.size < TAIL_BYTES || (await fh.read(tail, 0, TAIL_BYTES, st.size - TAIL_BYTES)).bytesRead !== TAIL_BYTES) {
      throw new PackDamaged(`${file} is shorter than a pack's trailer`);
    }
    if (!tail.subarray(4).equals(MAGIC)) throw new PackDamaged(`${file} does not end as a pack does`);
    const n = tail.readUInt32LE(0);
    const blobBytes = st.size - TAIL_BYTES - n * ENTRY_BYTES;
    if (blobBytes < 0) throw new PackDamaged(`${file} says it holds ${n} blobs, more than its size allows`);
    const index = Buffer.alloc(n * ENTRY_BYTES);
    if ((await fh.read(index, 0, index.length, blobBytes)).bytesRead !== index.length) {
      throw new PackDamaged(`${file}'s index is cut short`);
    }
    const entries: PackEntry[] = [];
    for (let at = 0; at < index.length; at += ENTRY_BYTES) {
      const offset = Number(index.readBigUInt64LE(at + 32));
      const size = Number(index.readBigUInt64LE(at + 40));
      if (offset + size > blobBytes) throw new PackDamaged(`${file}'s index names bytes past its blobs`);
      entries.push({ hash: index.toString('hex', at, at + 32), offset, size });
    }
    return { entries, blobBytes, mtimeMs: st.mtimeMs };
  } finally {
    await fh.close();
  }
}

/** Packs live in one folder beside the blob folders, `<root>/packs/<id>.pack`; `.tmp` files are writes in flight. */
export const PACKS_FOLDER = 'packs';
export const isPackName = (name: string): boolean => /^[0-9a-f]{32}\.pack$/.test(name);
export const packIdOf = (file: string): string => path.basename(file, '.pack');
