// One user's view of the content-addressed store: per-user scope for dedup.
//
// Blobs are stored once on disk, but a blob exists *for user U* only when U proved it holds the bytes (it uploaded
// them and the gateway verified them against the digest) or a snapshot shared with U names it. So find_missing
// answers "missing" for a blob another user stored, get_blobs answers not_found for it, and U must upload the bytes
// to gain it: nothing U can ask reveals whether someone else holds some content. Keyed digests would hide it too,
// but would also end dedup across users and make a shared snapshot's chunks unreadable without re-keying them.
import { Digest, formatDigest } from '@kernelhop/kernel-snapshot';
import { BlobStore, PutResult, verifyBlob } from './blobStore.js';
import { quotaMessage } from './quota.js';
import { SnapshotStore } from './snapshotStore.js';

/** Digests per visibility query of a find_missing (a few milliseconds of SQLite each). */
const VISIBILITY_SLICE = 8192;

export class UserBlobView implements BlobStore {
  constructor(
    private readonly store: BlobStore,
    private readonly snapshots: SnapshotStore,
    readonly user: string,
  ) {}

  async has(digest: Digest): Promise<boolean> {
    return (await this.findMissing([digest])).length === 0;
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const unique = new Map<string, Digest>();
    for (const d of digests) unique.set(formatDigest(d), d);
    // In slices, yielding between them: one user's long list must not hold up every other user's requests.
    const keys = [...unique.keys()];
    const visible = new Set<string>();
    for (let at = 0; at < keys.length; at += VISIBILITY_SLICE) {
      if (at > 0) await new Promise((resolve) => setImmediate(resolve));
      const slice = keys.slice(at, at + VISIBILITY_SLICE);
      for (const d of await this.snapshots.visibleDigests(this.user, slice, Date.now())) visible.add(d);
    }
    // The store still checks each visible blob's file: a hold says the user proved the bytes, not that they are on
    // disk (a put's hold is taken before its write; gc drops stale holds and then sweeps).
    const candidates = [...unique.values()].filter((d) => visible.has(formatDigest(d)));
    const absent = new Set((await this.store.findMissing(candidates)).map(formatDigest));
    return [...unique].filter(([key]) => !visible.has(key) || absent.has(key)).map(([, d]) => d);
  }

  async get(digest: Digest): Promise<Buffer | undefined> {
    return (await this.getMany([digest]))[0];
  }

  /** Each blob's bytes, or undefined where it is not stored or not this user's to read; one visibility query. */
  async getMany(digests: readonly Digest[]): Promise<Array<Buffer | undefined>> {
    const visible = await this.snapshots.visibleDigests(this.user, digests.map(formatDigest), Date.now());
    return Promise.all(digests.map((d) => (visible.has(formatDigest(d)) ? this.store.get(d) : undefined)));
  }

  async put(digest: Digest, data: Uint8Array): Promise<PutResult> {
    return (await this.putMany([{ digest, data }]))[0];
  }

  /** Puts a batch (one put_blobs frame): the holds of all its verified blobs are recorded in one transaction. */
  async putMany(items: ReadonlyArray<{ digest: Digest; data: Uint8Array }>): Promise<PutResult[]> {
    // Verified before anything is recorded: a hold is proof of the bytes, never a claim.
    const verdicts = items.map((it) => verifyBlob(it.digest, it.data));
    const good = items.flatMap((_, i) => (verdicts[i].code === 'ok' ? [i] : []));
    const reserved = await this.snapshots.reserveBlobs(
      this.user,
      good.map((i) => ({ digest: formatDigest(items[i].digest), size: items[i].digest.sizeBytes })),
      Date.now(),
    );
    const reservation = new Map(good.map((i, k) => [i, reserved[k]]));
    // What was reserved goes to the store as one batch (one pack in the directory store).
    const storing = good.filter((i) => reservation.get(i)?.ok);
    const stored = await this.store.putMany(storing.map((i) => items[i]));
    const results = items.map((it, i): PutResult => {
      const r = reservation.get(i);
      return r !== undefined && !r.ok ? { code: 'quota_exceeded', message: quotaMessage(r.used, r.quota, it.digest.sizeBytes) } : verdicts[i];
    });
    storing.forEach((i, k) => (results[i] = stored[k]));
    return results;
  }
}
