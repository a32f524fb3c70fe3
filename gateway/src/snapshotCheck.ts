// Whether a snapshot is complete in the store: its manifest and every chunk it names.
import { Digest, ManifestError, formatDigest, manifestBlobDigests, parseManifestBytes } from '@kernelhop/kernel-snapshot';
import { BlobStore } from './blobStore.js';

export type SnapshotCheck =
  | { ok: true; chunkCount: number; chunks: Digest[] }
  | { ok: false; code: 'missing_blobs'; missing: Digest[]; message: string }
  | { ok: false; code: 'bad_manifest'; message: string };

/** How many missing digests an error message lists. */
const LISTED = 10;

export async function checkSnapshot(store: BlobStore, manifestDigest: Digest): Promise<SnapshotCheck> {
  const bytes = await store.get(manifestDigest);
  if (bytes === undefined) {
    return {
      ok: false,
      code: 'missing_blobs',
      missing: [manifestDigest],
      message: `snapshot manifest ${formatDigest(manifestDigest)} is not in the store; upload it (after its chunks) first`,
    };
  }
  let chunks: Digest[];
  try {
    chunks = manifestBlobDigests(parseManifestBytes(bytes));
  } catch (e) {
    if (!(e instanceof ManifestError)) throw e;
    return { ok: false, code: 'bad_manifest', message: `snapshot ${formatDigest(manifestDigest)}: ${e.message}` };
  }
  const missing = await store.findMissing(chunks);
  if (missing.length > 0) {
    const listed = missing.slice(0, LISTED).map(formatDigest).join(', ');
    const more = missing.length > LISTED ? ` and ${missing.length - LISTED} more` : '';
    return {
      ok: false,
      code: 'missing_blobs',
      missing: missing.slice(0, LISTED),
      message: `snapshot ${formatDigest(manifestDigest)} names ${missing.length} chunk(s) not in the store: ${listed}${more}`,
    };
  }
  return { ok: true, chunkCount: chunks.length, chunks };
}
