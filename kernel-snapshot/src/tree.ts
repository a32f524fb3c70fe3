// The working directory a hop carries, as a content-addressed tree (ARCHITECTURE.md, "Files"): one blob per
// directory naming its files' chunks, its subdirectories' blobs and its symlinks. The Python twin,
// kernelhop_snapshot/tree.py, writes these blobs; here they are read, to know every blob a tree names.
import { Digest, DigestError, formatDigest, parseDigest } from './digest.js';

export const TREE_KIND = 'kernelhop.tree';
export const TREE_VERSION = 1;

export class TreeError extends Error {
  override name = 'TreeError';
}

/** What one directory blob holds: its files' chunks and its subdirectories' blobs. */
export interface TreeDirectory {
  chunks: Digest[];
  subtrees: Digest[];
}

/** Parse and validate one directory blob (canonical JSON, as tree.py writes it). */
export function parseTreeBytes(bytes: Uint8Array, where: string): TreeDirectory {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new TreeError(`${where}: a tree blob is UTF-8 JSON (${(e as Error).message})`);
  }
  const t = value as Record<string, unknown>;
  if (typeof t !== 'object' || t === null || t.kind !== TREE_KIND || t.version !== TREE_VERSION) {
    throw new TreeError(`${where}: not a ${TREE_KIND} blob of version ${TREE_VERSION}`);
  }
  const entries = t.entries;
  if (typeof entries !== 'object' || entries === null || Array.isArray(entries)) {
    throw new TreeError(`${where}: entries must be an object`);
  }
  const out: TreeDirectory = { chunks: [], subtrees: [] };
  for (const [name, raw] of Object.entries(entries as Record<string, unknown>)) {
    const at = `${where}/${name}`;
    if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
      throw new TreeError(`${at}: ${JSON.stringify(name)} is not a file name`);
    }
    const e = raw as Record<string, unknown>;
    try {
      if (e?.type === 'file' && Array.isArray(e.chunks) && typeof e.size === 'number') {
        const chunks = e.chunks.map((c) => parseDigest(c));
        const total = chunks.reduce((n, c) => n + c.sizeBytes, 0);
        if (total !== e.size) throw new TreeError(`${at}: chunks add up to ${total} bytes but size says ${e.size}`);
        out.chunks.push(...chunks);
      } else if (e?.type === 'dir') {
        out.subtrees.push(parseDigest(e.tree));
      } else if (!(e?.type === 'symlink' && typeof e.target === 'string')) {
        throw new TreeError(`${at}: an entry is a file {size, chunks}, a dir {tree} or a symlink {target}`);
      }
    } catch (err) {
      if (err instanceof DigestError) throw new TreeError(`${at}: ${err.message}`);
      throw err;
    }
  }
  return out;
}

/** Reads blobs; `undefined` for one that is not there. */
export type ReadBlobs = (digests: Digest[]) => Promise<Array<Uint8Array | undefined>>;

export type TreeWalk = { ok: true; blobs: Digest[] } | { ok: false; missing: Digest[] };

/** Trees walked lately, by root digest: a tree's blobs are fixed by its digest, and a hop's tree seldom changes. */
const recentWalks = new Map<string, Digest[]>();
const RECENT_WALKS = 16;

/**
 * Every blob of the tree under `root`: its directory blobs and its files' chunks, each once. Directory blobs are
 * read one level at a time (one `read` per level); a directory blob missing ends the walk with the ones missing.
 * A tree walked lately is not read again: whether its blobs are present is the caller's to check, as ever.
 */
export async function treeBlobDigests(root: Digest, read: ReadBlobs): Promise<TreeWalk> {
  const key = formatDigest(root);
  const known = recentWalks.get(key);
  if (known !== undefined) {
    recentWalks.delete(key);
    recentWalks.set(key, known);
    return { ok: true, blobs: known };
  }
  const walk = await walkTree(root, read);
  if (walk.ok) {
    recentWalks.set(key, walk.blobs);
    if (recentWalks.size > RECENT_WALKS) recentWalks.delete(recentWalks.keys().next().value as string);
  }
  return walk;
}

async function walkTree(root: Digest, read: ReadBlobs): Promise<TreeWalk> {
  const seen = new Set<string>();
  const blobs: Digest[] = [];
  const add = (d: Digest): boolean => {
    const key = formatDigest(d);
    if (seen.has(key)) return false;
    seen.add(key);
    blobs.push(d);
    return true;
  };
  let level = [root];
  add(root);
  while (level.length > 0) {
    const found = await read(level);
    const missing = level.filter((_, i) => found[i] === undefined);
    if (missing.length > 0) return { ok: false, missing };
    const next: Digest[] = [];
    level.forEach((d, i) => {
      const dir = parseTreeBytes(found[i] as Uint8Array, `tree ${formatDigest(d)}`);
      dir.chunks.forEach(add);
      for (const sub of dir.subtrees) if (add(sub)) next.push(sub);
    });
    level = next;
  }
  return { ok: true, blobs };
}
