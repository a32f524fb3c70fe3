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

export class UserBlobView implements BlobStore {
  constructor(
    private readonly store: BlobStore,
    private readonly snapshots: SnapshotStore,
    readonly user: string,
  ) {}

  async has(digest: Digest): Promise<boolean> {
    return (await this.snapshots.canSee(this.user, formatDigest(digest), Date.now())) && (await this.store.has(digest));
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const unique = new Map<string, Digest>();
    for (const d of digests) unique.set(formatDigest(d), d);
    const present = await Promise.all([...unique.values()].map((d) => this.has(d)));
    return [...unique.values()].filter((_, i) => !present[i]);
  }

  async get(digest: Digest): Promise<Buffer | undefined> {
    if (!(await this.snapshots.canSee(this.user, formatDigest(digest), Date.now()))) return undefined;
    return this.store.get(digest);
  }

  async put(digest: Digest, data: Uint8Array): Promise<PutResult> {
    // Verified before anything is recorded: a hold is proof of the bytes, never a claim.
    const verdict = verifyBlob(digest, data);
    if (verdict.code !== 'ok') return verdict;
    const reserved = await this.snapshots.reserveBlob(this.user, formatDigest(digest), digest.sizeBytes, Date.now());
    if (!reserved.ok) {
      return {
        code: 'quota_exceeded',
        message: quotaMessage(reserved.used, reserved.quota, digest.sizeBytes),
      };
    }
    return this.store.put(digest, data);
  }
}
