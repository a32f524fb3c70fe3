// The blob store on an S3-compatible object store (AWS, MinIO, Ceph, R2), with the AWS SDK as it is.
// Layout and rules: "Stores behind interfaces" in docs/ARCHITECTURE.md.
import {
  AbortMultipartUploadCommand,
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  NoSuchKey,
  NotFound,
  S3Client,
  S3ServiceException,
  paginateListObjectsV2,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { LRUCache } from 'lru-cache';
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { PutResult, SweepableBlobStore, verifyBlob } from '../blobStore.js';
import type { BlobLocation, DirectReadBlobStore } from './directReads.js';
import { S3Location } from './storeUrl.js';

/** Blobs at least this big go up in parts (lib-storage), so a large manifest is not one long request to retry whole. */
export const MULTIPART_THRESHOLD = 16 * 1024 * 1024;
/** The smallest part S3 accepts (but the last). */
const PART_BYTES = 5 * 1024 * 1024;
/** Requests in flight for one findMissing: enough to hide the round trip, few enough for the SDK's socket pool. */
const HEAD_CONCURRENCY = 32;
/** How long a presigned GET stays valid: a runtime fetches right after asking. */
export const PRESIGN_EXPIRES_S = 300;
/** Attempts per request; the SDK's standard mode backs off exponentially with jitter between them. */
const MAX_ATTEMPTS = 5;
const PRESENT_MAX = 1_000_000;

export interface S3StoreOptions {
  location: S3Location;
  /** --s3-endpoint: a MinIO, Ceph, R2 or test server; path-style addressing then, as those expect. */
  endpoint?: string;
  /** Defaults to AWS_REGION / AWS_DEFAULT_REGION, else us-east-1 (S3-compatibles ignore it but SigV4 needs one). */
  region?: string;
  multipartThreshold?: number;
}

export class S3BlobStore implements SweepableBlobStore, DirectReadBlobStore {
  readonly client: S3Client;
  private readonly bucket: string;
  /** Key prefix with its trailing slash ("" for the bucket's root). */
  private readonly prefix: string;
  private readonly multipartThreshold: number;
  /** As DiskBlobStore's: blobs seen stored; only removeIfOlder removes, and a check overlapping a removal is not kept. */
  private readonly present = new LRUCache<string, true>({ max: PRESENT_MAX });
  private removalsStarted = 0;
  private removalsRunning = 0;

  constructor(opts: S3StoreOptions) {
    this.bucket = opts.location.bucket;
    this.prefix = opts.location.prefix === '' ? '' : `${opts.location.prefix}/`;
    this.multipartThreshold = opts.multipartThreshold ?? MULTIPART_THRESHOLD;
    this.client = new S3Client({
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      ...(opts.endpoint === undefined ? {} : { endpoint: opts.endpoint, forcePathStyle: true }),
      maxAttempts: MAX_ATTEMPTS,
      retryMode: 'standard',
    });
  }

  /** Opens the store and checks that the bucket answers, so a wrong bucket or credential fails at start, clearly. */
  static async open(opts: S3StoreOptions): Promise<S3BlobStore> {
    const store = new S3BlobStore(opts);
    try {
      await store.client.send(new HeadBucketCommand({ Bucket: store.bucket }));
    } catch (e) {
      store.client.destroy();
      const where = `s3://${store.bucket}/${store.prefix}${opts.endpoint === undefined ? '' : ` at ${opts.endpoint}`}`;
      const why = isNotFound(e) ? 'no such bucket (create it first)' : describe(e);
      throw new Error(`the blob store ${where} did not answer: ${why} (check the bucket, AWS_* credentials and --s3-endpoint)`);
    }
    return store;
  }

  keyOf(digest: Digest): string {
    return `${this.prefix}cas/${digest.hash}`;
  }

  async has(digest: Digest): Promise<boolean> {
    if (this.present.has(digest.hash)) return true;
    const started = this.removalsRunning === 0 ? this.removalsStarted : -1;
    const size = await this.sizeOf(digest);
    const ok = size === digest.sizeBytes;
    if (ok && started === this.removalsStarted && this.removalsRunning === 0) this.present.set(digest.hash, true);
    return ok;
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const unique = new Map<string, Digest>();
    for (const d of digests) unique.set(formatDigest(d), d);
    const unknown = [...unique.values()].filter((d) => !this.present.has(d.hash));
    const present = await mapLimit(unknown, HEAD_CONCURRENCY, (d) => this.has(d));
    return unknown.filter((_, i) => !present[i]);
  }

  /** An object per blob, as put writes it: the batch's puts go in parallel. */
  putMany(items: ReadonlyArray<{ digest: Digest; data: Uint8Array }>): Promise<PutResult[]> {
    return Promise.all(items.map((it) => this.put(it.digest, it.data)));
  }

  async put(digest: Digest, data: Uint8Array): Promise<PutResult> {
    const verdict = verifyBlob(digest, data);
    if (verdict.code !== 'ok') return verdict;
    if (await this.has(digest)) {
      // As the disk store's touch: gc's grace counts from this put. A copy onto itself is S3's only way to move
      // LastModified; the bytes stay those the key names.
      await this.touch(digest);
      if (await this.has(digest)) return verdict;
    }
    const upload = new Upload({
      client: this.client,
      // If-None-Match: * makes the write conditional where the server supports it (AWS since 2024, MinIO, moto):
      // an object already under the key is never replaced. lib-storage passes it to PutObject or, in parts, to
      // CompleteMultipartUpload.
      params: { Bucket: this.bucket, Key: this.keyOf(digest), Body: data, IfNoneMatch: '*', ContentLength: data.byteLength },
      // lib-storage sends one PutObject when the body fits in one part: below the threshold, the part is the blob.
      partSize: data.byteLength < this.multipartThreshold ? Math.max(PART_BYTES, data.byteLength) : PART_BYTES,
      queueSize: 4,
    });
    try {
      await upload.done();
    } catch (e) {
      // 412: someone stored the key first. Its bytes hash to the key, as these do: the blob is stored.
      if (!isPreconditionFailed(e)) throw e;
    }
    return verdict;
  }

  async get(digest: Digest): Promise<Buffer | undefined> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.keyOf(digest) }));
      if (res.ContentLength !== digest.sizeBytes || res.Body === undefined) {
        await res.Body?.transformToByteArray().catch(() => undefined); // frees the socket
        return undefined;
      }
      const bytes = await res.Body.transformToByteArray();
      // As the disk store: an object of another size is as good as missing; callers verify hashes themselves.
      return bytes.byteLength === digest.sizeBytes ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : undefined;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** A presigned GET, valid for a few minutes. */
  async readUrl(digest: Digest): Promise<BlobLocation> {
    const url = await getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.keyOf(digest) }), {
      expiresIn: PRESIGN_EXPIRES_S,
    });
    return { url, offset: 0 };
  }

  async *list(): AsyncIterable<{ digest: Digest; mtimeMs: number }> {
    const under = `${this.prefix}cas/`;
    for await (const page of paginateListObjectsV2({ client: this.client }, { Bucket: this.bucket, Prefix: under })) {
      for (const o of page.Contents ?? []) {
        const hash = (o.Key ?? '').slice(under.length);
        if (!/^[0-9a-f]{64}$/.test(hash)) continue;
        yield { digest: { hash, sizeBytes: o.Size ?? 0 }, mtimeMs: o.LastModified?.getTime() ?? 0 };
      }
    }
  }

  /** An object per blob: a removal gives its space back at once, so there is nothing to compact. */
  async compact(): Promise<void> {}

  /** The temporaries of an object store are multipart uploads a crash left open: their parts cost storage. */
  async removeStaleTemporaries(notAfterMs: number): Promise<number> {
    let removed = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.client.send(
        new ListMultipartUploadsCommand({
          Bucket: this.bucket,
          Prefix: `${this.prefix}cas/`,
          KeyMarker: keyMarker,
          UploadIdMarker: uploadIdMarker,
        }),
      );
      for (const u of page.Uploads ?? []) {
        if ((u.Initiated?.getTime() ?? 0) >= notAfterMs) continue;
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId }));
        removed += 1;
      }
      if (page.IsTruncated !== true) return removed;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  async removeIfOlder(digest: Digest, notAfterMs: number): Promise<boolean> {
    this.removalsStarted++;
    this.removalsRunning++;
    this.present.delete(digest.hash);
    try {
      // Checked again right before deleting: a put that touched the object since the listing keeps it.
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keyOf(digest) }));
      if ((head.LastModified?.getTime() ?? Number.POSITIVE_INFINITY) >= notAfterMs) return false;
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keyOf(digest) }));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    } finally {
      this.removalsRunning--;
    }
  }

  close(): void {
    this.client.destroy();
  }

  /** The stored object's size, or undefined when there is none. */
  private async sizeOf(digest: Digest): Promise<number | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keyOf(digest) }));
      return head.ContentLength;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  private async touch(digest: Digest): Promise<void> {
    const key = this.keyOf(digest);
    await this.client
      .send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: key,
          CopySource: `${this.bucket}/${encodeURIComponent(key).replace(/%2F/g, '/')}`,
          MetadataDirective: 'REPLACE',
          Metadata: { touched: String(Date.now()) },
        }),
      )
      .catch((e: unknown) => {
        if (!isNotFound(e)) throw e;
      });
  }
}

function isNotFound(e: unknown): boolean {
  return (
    e instanceof NoSuchKey ||
    e instanceof NotFound ||
    (e instanceof S3ServiceException && (e.$metadata.httpStatusCode === 404 || e.name === 'NoSuchKey' || e.name === 'NotFound'))
  );
}

function isPreconditionFailed(e: unknown): boolean {
  return e instanceof S3ServiceException && (e.$metadata.httpStatusCode === 412 || e.name === 'PreconditionFailed');
}

function describe(e: unknown): string {
  if (e instanceof S3ServiceException) return `${e.name} (HTTP ${e.$metadata.httpStatusCode ?? '?'}): ${e.message}`;
  return String(e);
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}
