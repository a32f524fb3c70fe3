// The blobs of the file tree a snapshot carries (ARCHITECTURE.md, "Files"): fetched into the cache with the state,
// so the worker can lay the notebook's working directory out from the cache alone.
import { Digest, TreeError, formatDigest, manifestFilesTree, treeBlobDigests } from '@kernelhop/kernel-snapshot';
import { ChunkCache } from './chunkCache.js';
import { GatewayClient } from './gatewayClient.js';

/**
 * Every blob of the snapshot's file tree (none when it carries no files). Directory blobs the cache lacks are
 * fetched from `gateway` one level at a time; without a gateway (a snapshot the worker just wrote) all must be cached.
 */
export async function treeBlobs(
  cache: ChunkCache,
  snapshot: Digest,
  gateway?: GatewayClient,
  signal?: AbortSignal,
): Promise<Digest[]> {
  const root = manifestFilesTree(await cache.manifest(snapshot));
  if (root === undefined) return [];
  const walk = await treeBlobDigests(root, async (level) => {
    if (gateway) await cache.fetchMissing(gateway, level, undefined, signal);
    return Promise.all(level.map((d) => (cache.has(d) ? cache.read(d) : undefined)));
  });
  if (!walk.ok) {
    const lacking = walk.missing.map(formatDigest).join(', ');
    throw new TreeError(`the file tree of snapshot ${formatDigest(snapshot)} lacks ${lacking}`);
  }
  return walk.blobs;
}
