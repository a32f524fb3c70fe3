// The blobs of the file tree a snapshot carries (ARCHITECTURE.md, "Files"): fetched into the cache with the state,
// so the worker can lay the notebook's working directory out from the blobs handed to it.
import { Digest, TreeError, formatDigest, manifestFilesTree, treeBlobDigests } from '@kernelhop/kernel-snapshot';
import { ChunkCache } from './chunkCache.js';

/**
 * Every blob of the snapshot's file tree (none when it carries no files). `ensure` brings each level's directory
 * blobs into the cache before they are read: fetched from the gateway for a run's input, taken verified from the
 * worker's output for its result.
 */
export async function treeBlobs(
  cache: ChunkCache,
  snapshot: Digest,
  ensure: (level: Digest[]) => Promise<unknown>,
): Promise<Digest[]> {
  const root = manifestFilesTree(await cache.manifest(snapshot));
  if (root === undefined) return [];
  const walk = await treeBlobDigests(root, async (level) => {
    await ensure(level);
    return Promise.all(level.map((d) => (cache.has(d) ? cache.read(d) : undefined)));
  });
  if (!walk.ok) {
    const lacking = walk.missing.map(formatDigest).join(', ');
    throw new TreeError(`the file tree of snapshot ${formatDigest(snapshot)} lacks ${lacking}`);
  }
  return walk.blobs;
}
