// Direct reads: a runtime reads the chunks of its runs straight from the store, by URLs the gateway gives (presigned
// GETs of an object store, file: URLs of the directory store), so chunk bytes do not pass through the gateway. The
// read scope is the one BatchReadBlobs applies.
import * as grpc from '@grpc/grpc-js';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { BlobStore } from '../blobStore.js';

/** Where a blob's bytes lie: `digest.sizeBytes` of them from `offset` of what `url` names (a pack, or the blob alone). */
export interface BlobLocation {
  url: string;
  offset: number;
}

/** A store whose blobs a runtime can read itself, by URLs the gateway gives (S3BlobStore, DiskBlobStore). */
export interface DirectReadBlobStore {
  readUrl(digest: Digest): Promise<BlobLocation>;
}

export function readsDirectly(store: object): store is DirectReadBlobStore {
  return typeof (store as Partial<DirectReadBlobStore>).readUrl === 'function';
}

/** URLs per call, as BatchReadBlobs' byte limit bounds its batches: signing is local, but answers stay small. */
export const MAX_URLS_PER_CALL = 1024;

export class BlobUrlError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export interface BlobUrl extends BlobLocation {
  digest: Digest;
  status: { code: number; message: string };
}

/** A URL for each digest the runtime may read; others are refused one by one, as BatchReadBlobs refuses them. */
export async function blobUrls(store: BlobStore, mayRead: (digest: string) => boolean, digests: Digest[]): Promise<BlobUrl[]> {
  if (!readsDirectly(store)) {
    throw new BlobUrlError(grpc.status.FAILED_PRECONDITION, "this gateway's blob store gives no URLs; read blobs with BatchReadBlobs");
  }
  if (digests.length > MAX_URLS_PER_CALL) {
    throw new BlobUrlError(grpc.status.INVALID_ARGUMENT, `GetBlobUrls asks for ${digests.length} URLs; at most ${MAX_URLS_PER_CALL} per call, split the batch`);
  }
  return Promise.all(
    digests.map(async (d) =>
      mayRead(formatDigest(d))
        ? { digest: d, ...(await store.readUrl(d)), status: { code: grpc.status.OK, message: '' } }
        : {
            digest: d,
            url: '',
            offset: 0,
            status: { code: grpc.status.PERMISSION_DENIED, message: `blob ${formatDigest(d)} is not part of a run assigned to this runtime` },
          },
    ),
  );
}
