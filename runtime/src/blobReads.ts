// Reads blobs for the chunk cache: straight from the gateway's object store by presigned URLs where the gateway
// offers them (an S3-compatible store), else through the gateway's BatchReadBlobs. Either way the cache verifies
// every blob's digest before keeping it, so a URL can only ever give bytes that are checked.
import * as grpc from '@grpc/grpc-js';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import type { GatewayClient } from './gatewayClient.js';
import type { PbDigest } from './proto.js';

export class BlobReadError extends Error {
  override name = 'BlobReadError';
}

/** Fetches in flight per batch: the store serves them in parallel; more would only queue on sockets. */
const FETCHES_PER_BATCH = 16;

const toPb = (d: Digest): PbDigest => ({ hash: d.hash, sizeBytes: d.sizeBytes });

/** The bytes of each blob of `batch`, in order (not yet verified). */
export async function readBlobs(gateway: GatewayClient, batch: Digest[], signal?: AbortSignal): Promise<Buffer[]> {
  if (gateway.presignedReads) {
    const urls = await blobUrls(gateway, batch);
    if (urls !== undefined) {
      try {
        return await mapLimit(batch, FETCHES_PER_BATCH, (d, i) => fetchBlob(d, urls[i] as string, signal));
      } catch (e) {
        signal?.throwIfAborted();
        // The store unreachable from this host (a firewall, a private endpoint): the gateway's stream still works.
        gateway.presignedReads = false;
        gateway.log(`presigned reads from the store failed (${(e as Error).message}); reading through the gateway from now on`);
      }
    }
  }
  return viaGateway(gateway, batch);
}

/** URLs for the batch, or undefined when the gateway's store cannot sign them (then it never will). */
async function blobUrls(gateway: GatewayClient, batch: Digest[]): Promise<string[] | undefined> {
  let res;
  try {
    res = await gateway.getBlobUrls(batch.map(toPb));
  } catch (e) {
    const code = (e as grpc.ServiceError).code;
    if (code === grpc.status.FAILED_PRECONDITION || code === grpc.status.UNIMPLEMENTED) {
      gateway.presignedReads = false;
      return undefined;
    }
    throw e;
  }
  const byHash = new Map(res.responses.map((r) => [r.digest?.hash ?? '', r]));
  return batch.map((d) => {
    const r = byHash.get(d.hash);
    if (!r) throw new BlobReadError(`the gateway's answer to GetBlobUrls left out blob ${formatDigest(d)}`);
    if (r.status && r.status.code !== 0) {
      throw new BlobReadError(`the gateway could not give blob ${formatDigest(d)}: ${r.status.message || `status ${r.status.code}`}`);
    }
    return r.url;
  });
}

async function fetchBlob(d: Digest, url: string, signal?: AbortSignal): Promise<Buffer> {
  const res = await fetch(url, { signal });
  if (res.status !== 200) {
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
