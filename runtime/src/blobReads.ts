// Reads blobs for the chunk cache: straight from the gateway's store by the URLs it gives where it gives them
// (presigned GETs of an S3-compatible store; file: URLs of its directory store, which a runtime on the gateway's
// host copies without a byte crossing a socket), else through the gateway's BatchReadBlobs. Either way the cache verifies
// every blob's digest before keeping it, so a URL can only ever give bytes that are checked.
import * as grpc from '@grpc/grpc-js';
import { fileURLToPath } from 'node:url';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import type { GatewayClient } from './gatewayClient.js';
import type { PbDigest } from './proto.js';

export class BlobReadError extends Error {
  override name = 'BlobReadError';
}

/** Where fetched blobs go (the chunk cache), each verified there before it is kept. */
export interface BlobSink {
  /** Keeps bytes read from the store or the gateway; throws when they are not the digest's. */
  write(d: Digest, bytes: Buffer): Promise<void>;
  /** Keeps the blob from `offset` of a file of this host; false when that file cannot give it (absent, unreadable, other bytes). */
  adopt(d: Digest, file: string, offset: number): Promise<boolean>;
}

/** Digests per GetBlobUrls call at most, the gateway's limit (runtime.proto). */
const URLS_PER_CALL = 1024;

/** Fetches (or files copied) in flight per batch: the store serves them in parallel; more would only queue. */
const READS_PER_BATCH = 16;

const toPb = (d: Digest): PbDigest => ({ hash: d.hash, sizeBytes: d.sizeBytes });

/** Reads each blob of `batch` into `sink`. */
export async function readBlobs(gateway: GatewayClient, batch: Digest[], sink: BlobSink, signal?: AbortSignal): Promise<void> {
  const urls = gateway.directReads ? await blobUrls(gateway, batch) : undefined;
  if (urls !== undefined && urls.every((u) => u.url.startsWith('file:'))) {
    const unread: Digest[] = [];
    await mapLimit(batch, READS_PER_BATCH, async (d, i) => {
      const at = urls[i] as Located;
      if (!(await sink.adopt(d, fileURLToPath(at.url), at.offset))) unread.push(d);
    });
    if (unread.length === 0) return;
    if (unread.length === batch.length) {
      // Not the gateway's host (or not its user): the files named are not there to read, so they never will be.
      gateway.directReads = false;
      gateway.log(`the gateway's store is not readable from this runtime (${batch.length} files of a batch); reading through the gateway from now on`);
    }
    return write(sink, unread, await viaGateway(gateway, unread));
  }
  let blobs: Buffer[] | undefined;
  if (urls !== undefined) {
    try {
      blobs = await mapLimit(batch, READS_PER_BATCH, (d, i) => fetchBlob(d, urls[i] as Located, signal));
    } catch (e) {
      signal?.throwIfAborted();
      // The store unreachable from this host (a firewall, a private endpoint): the gateway's stream still works.
      gateway.directReads = false;
      gateway.log(`presigned reads from the store failed (${(e as Error).message}); reading through the gateway from now on`);
    }
  }
  return write(sink, batch, blobs ?? (await viaGateway(gateway, batch)));
}

async function write(sink: BlobSink, batch: Digest[], blobs: Buffer[]): Promise<void> {
  await Promise.all(batch.map((d, i) => sink.write(d, blobs[i] as Buffer)));
}

/** Where a blob lies: its digest's size in bytes from `offset` of what `url` names. */
interface Located {
  url: string;
  offset: number;
}

/** URLs for the batch, or undefined when the gateway's store gives none (then it never will). */
async function blobUrls(gateway: GatewayClient, batch: Digest[]): Promise<Located[] | undefined> {
  const responses = [];
  try {
    // A batch of a working directory's small files can name thousands of blobs: asked for in slices.
    for (let at = 0; at < batch.length; at += URLS_PER_CALL) {
      responses.push(...(await gateway.getBlobUrls(batch.slice(at, at + URLS_PER_CALL).map(toPb))).responses);
    }
  } catch (e) {
    const code = (e as grpc.ServiceError).code;
    if (code === grpc.status.FAILED_PRECONDITION || code === grpc.status.UNIMPLEMENTED) {
      gateway.directReads = false;
      return undefined;
    }
    throw e;
  }
  const byHash = new Map(responses.map((r) => [r.digest?.hash ?? '', r]));
  return batch.map((d) => {
    const r = byHash.get(d.hash);
    if (!r) throw new BlobReadError(`the gateway's answer to GetBlobUrls left out blob ${formatDigest(d)}`);
    if (r.status && r.status.code !== 0) {
      throw new BlobReadError(`the gateway could not give blob ${formatDigest(d)}: ${r.status.message || `status ${r.status.code}`}`);
    }
    return { url: r.url, offset: Number(r.offset ?? 0) };
  });
}

async function fetchBlob(d: Digest, at: Located, signal?: AbortSignal): Promise<Buffer> {
  // A blob inside a larger object is asked for by its byte range (a presigned URL signs no Range header).
  const ranged = at.offset > 0;
  const headers = ranged ? { Range: `bytes=${at.offset}-${at.offset + d.sizeBytes - 1}` } : undefined;
  const res = await fetch(at.url, { signal, headers });
  if (res.status !== (ranged ? 206 : 200)) {
    await res.body?.cancel();
    throw new BlobReadError(`the store answered HTTP ${res.status} for blob ${formatDigest(d)}`);
  }
  return Buffer.from(await res.arrayBuffer());
}

async function viaGateway(gateway: GatewayClient, batch: Digest[]): Promise<Buffer[]> {
  const res = await gateway.batchReadBlobs(batch.map(toPb));
  const byHash = new Map(res.responses.map((r) => [r.digest?.hash ?? '', r]));
  return batch.map((d) => {
    const r = byHash.get(d.hash);
    if (!r) throw new BlobReadError(`the gateway's answer to BatchReadBlobs left out blob ${formatDigest(d)}`);
    if (r.status && r.status.code !== 0) {
      const why = r.status.message || `status ${r.status.code}`;
      throw new BlobReadError(`the gateway could not give blob ${formatDigest(d)}: ${why}`);
    }
    return r.data;
  });
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const lane = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i] as T, i);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, lane));
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
  return out;
}
