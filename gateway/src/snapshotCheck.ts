// Whether a snapshot is complete in the store: its manifest and every chunk it names, the blobs of the file tree
// it carries included (ARCHITECTURE.md, "Files"): so runs, holds, quotas and gc cover a hop's files as its state.
import {
  Digest,
  ManifestError,
  TreeError,
  formatDigest,
  manifestBlobDigests,
  manifestFilesTree,
  parseManifestBytes,
  treeBlobDigests,
} from '@kernelhop/kernel-snapshot';
import { LRUCache } from 'lru-cache';
import { BlobStore } from './blobStore.js';

export type SnapshotCheck =
  | { ok: true; chunkCount: number; chunks: Digest[] }
  | { ok: false; code: 'missing_blobs'; missing: Digest[]; message: string }
  | { ok: false; code: 'bad_manifest'; message: string };

/** How many missing digests an error message lists. */
const LISTED = 10;

/**
 * Chunk lists of manifests parsed lately, by manifest digest, newest last. A manifest's bytes are fixed by its
 * digest, so its chunk list is the same in every store and for every user; a warm hop checks one manifest up to four
 * times (run, assignment, Done, the user's hold), and parsing thousands of digests was most of the gateway's time.
 */
const recentChunkLists = new LRUCache<string, Digest[]>({ max: 64 });

export async function checkSnapshot(store: BlobStore, manifestDigest: Digest): Promise<SnapshotCheck> {
  const key = formatDigest(manifestDigest);
  let chunks = recentChunkLists.get(key);
  if (chunks === undefined) {
    const bytes = await store.get(manifestDigest);
    if (bytes === undefined) return Private.missingManifest(manifestDigest);
    try {
      const manifest = parseManifestBytes(bytes);
      chunks = manifestBlobDigests(manifest);
      const tree = manifestFilesTree(manifest);
      if (tree !== undefined) {
        // Directory blobs are read from this store (in a user's view, only those the user holds).
        const walk = await treeBlobDigests(tree, (ds) => Promise.all(ds.map((d) => store.get(d))));
        if (!walk.ok) return Private.missing(manifestDigest, walk.missing, 'directory blob(s) of its file tree');
        chunks = [...chunks, ...walk.blobs];
      }
    } catch (e) {
      if (!(e instanceof ManifestError || e instanceof TreeError)) throw e;
      return { ok: false, code: 'bad_manifest', message: `snapshot ${key}: ${e.message}` };
    }
  } else if (!(await store.has(manifestDigest))) {
    // Known or not, the manifest must be in this store (in a user's view: readable by that user).
    return Private.missingManifest(manifestDigest);
  }
  recentChunkLists.set(key, chunks);
  const missing = await store.findMissing(chunks);
  if (missing.length > 0) return Private.missing(manifestDigest, missing, 'chunk(s)');
  return { ok: true, chunkCount: chunks.length, chunks };
}

namespace Private {
  export function missing(manifest: Digest, missing: Digest[], what: string): SnapshotCheck {
    const listed = missing.slice(0, LISTED).map(formatDigest).join(', ');
    const more = missing.length > LISTED ? ` and ${missing.length - LISTED} more` : '';
    return {
      ok: false,
      code: 'missing_blobs',
      // All of them, so the client sends just those and retries (the message lists the first few).
      missing,
      message: `snapshot ${formatDigest(manifest)} names ${missing.length} ${what} not in the store: ${listed}${more}`,
    };
  }

  export function missingManifest(manifest: Digest): SnapshotCheck {
    return {
      ok: false,
      code: 'missing_blobs',
      missing: [manifest],
      message: `snapshot manifest ${formatDigest(manifest)} is not in the store; upload it (after its chunks) first`,
    };
  }
}
