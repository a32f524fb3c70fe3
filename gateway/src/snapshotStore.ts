// Users, who holds which blob, snapshots, refs and shares ("Snapshots, users and trust" in ARCHITECTURE.md).
// An interface (Promise-returning; Postgres implements it too, stores/postgresSnapshotStore.ts) and the embedded SQLite
// implementation, which shares the gateway's kernelhop.db. Every method that must check and write at once does so in
// one transaction.
import { createHash, randomBytes } from 'node:crypto';
import { SqliteDatabase, openGatewayDb } from './sqlite.js';
import { migrateSqlite } from './stores/migrations/index.js';
import { quotaMessage } from './quota.js';

export interface User {
  name: string;
  admin: boolean;
  /** Base64 of the raw 32-byte Ed25519 public key; null until the user's first save registers one. */
  publicKey: string | null;
  /** 0 = no limit. */
  quotaBytes: number;
}

export interface SnapshotRow {
  id: string;
  owner: string;
  author: string;
  manifest: string;
  /** The signed record, as canonical JSON text. */
  record: string;
  signature: string;
  /** Brought in with `snapshot import`: the author and key are as signed, not vouched for by this gateway. */
  imported: boolean;
  createdAt: number;
  sizeBytes: number;
}

export interface ShareRow {
  id: string;
  snapshot: string;
  owner: string;
  grantee: string | null;
  link: boolean;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
}

/** A blob by its digest (formatted) and its size in bytes. */
export type BlobSize = { digest: string; size: number };

/** A share to add: with one user, or a link. */
export interface NewShare {
  owner: string;
  snapshot: string;
  /** null: a link, which anyone it is given to may redeem. */
  grantee: string | null;
  expiresAt: number | null;
}

/** A new share's id and, for a link, its token (returned once; only its hash is stored). */
export type ShareKeys = { id: string; link: string | null };

export type Reserve = { ok: true } | { ok: false; used: number; quota: number };

export class StoreError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

export interface SnapshotStore {
  /** Makes sure the admin user exists with this token (KERNELHOP_TOKEN): the token given at start always works. */
  ensureAdmin(name: string, token: string): Promise<void>;
  authenticate(token: string): Promise<User | undefined>;
  getUser(name: string): Promise<User | undefined>;
  listUsers(): Promise<Array<User & { usedBytes: number }>>;
  /** Creates a user and returns its token (only its hash is stored). */
  addUser(name: string, quotaBytes: number): Promise<string>;
  /** A new token for the user; the old one stops working. */
  rotateToken(name: string): Promise<string>;
  /** Sets the user's quota (0 = no limit); what it holds already stays, even over a lowered quota. */
  setQuota(name: string, quotaBytes: number): Promise<void>;
  removeUser(name: string): Promise<void>;
  setPublicKey(name: string, key: string): Promise<void>;

  /**
   * Those of `digests` that `user` may read: it proved it holds the bytes, or a snapshot shared with it names them.
   * One query for the whole list, however long.
   */
  visibleDigests(user: string, digests: readonly string[], now: number): Promise<Set<string>>;
  /**
   * Records that `user` holds each blob, in order and in one transaction; a blob that would take it over its quota is
   * refused (and not recorded), the ones before it stay recorded.
   */
  reserveBlobs(user: string, blobs: readonly BlobSize[], now: number): Promise<Reserve[]>;
  /**
   * Records that `user` holds these blobs (the result of its run), all of them or, when those it does not hold yet
   * would take it over its quota, none; then the answer says how far over.
   */
  holdResult(user: string, digests: BlobSize[], now: number): Promise<Reserve & { adding: number }>;
  /** Moves to `now` the time of those holds of `user` on `digests` taken before `before` (gc keeps recent holds). */
  refreshHolds(user: string, digests: readonly string[], before: number, now: number): Promise<void>;
  usedBytes(user: string): Promise<number>;

  /** The size of a saved snapshot of `owner` with this manifest (then its blobs are complete and held), if any. */
  ownedManifestSize(owner: string, manifest: string): Promise<number | undefined>;
  /** In one transaction: the manifest's blob list (once per manifest), `owner`'s hold on them, the row, the ref. */
  insertSnapshot(row: SnapshotRow, blobs: BlobSize[] | null, ref: string | null, now: number): Promise<void>;
  getSnapshot(owner: string, id: string): Promise<SnapshotRow | undefined>;
  /** Snapshots `user` may read whose id starts with `prefix`: its own, then those shared with it. */
  findVisible(user: string, prefix: string, now: number): Promise<Array<SnapshotRow & { shared: boolean }>>;
  listOwn(owner: string): Promise<SnapshotRow[]>;
  listSharedWith(user: string, now: number): Promise<Array<SnapshotRow & { shareId: string; expiresAt: number | null }>>;
  /** Deletes the row, its refs and shares, and the owner's holds on blobs no other own snapshot names. */
  deleteSnapshot(owner: string, id: string): Promise<void>;

  getRef(owner: string, name: string): Promise<string | undefined>;
  listRefs(owner: string): Promise<Array<{ name: string; snapshot: string }>>;
  deleteRef(owner: string, name: string): Promise<boolean>;

  /** A share with a user, or a link (its token is returned once; only its hash is stored). */
  addShare(s: NewShare, now: number): Promise<ShareKeys>;
  /** Redeems a link for `user`: from then on the user reads that snapshot until the link expires or is revoked. */
  redeemLink(user: string, link: string, now: number): Promise<ShareRow | undefined>;
  listShares(owner: string, snapshot: string): Promise<ShareRow[]>;
  revokeShare(owner: string, shareId: string, now: number): Promise<boolean>;

  /** For gc: digests named by any saved snapshot's manifest. */
  liveDigests(): Promise<Set<string>>;
  /** For gc: drops holds that no own snapshot needs and are older than `before`; returns how many. */
  dropStaleHolds(before: number): Promise<number>;
  /** For gc: every digest some user holds. */
  heldDigests(): Promise<Set<string>>;
  close(): Promise<void>;
}

// A share is active for a user when it names the user or a link the user redeemed, is not revoked, not expired.
const ACTIVE_SHARE = `s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > @now)
  AND (s.grantee = @user OR s.id IN (SELECT share FROM link_redemptions WHERE user = @user))`;

export interface UserRow {
  name: string;
  admin: number;
  public_key: string | null;
  quota_bytes: number;
}
export interface SnapRow {
  owner: string;
  id: string;
  author: string;
  manifest: string;
  record: string;
  signature: string;
  imported: number;
  created_at: number;
  size_bytes: number;
}
export interface ShareDbRow {
  id: string;
  snapshot: string;
  owner: string;
  grantee: string | null;
  link_hash: string | null;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function newToken(prefix: string): string {
  return `${prefix}_${randomBytes(24).toString('base64url')}`;
}

/** The keys of a new share, the same in every store. */
export function newShareKeys(grantee: string | null): ShareKeys {
  return { id: randomBytes(12).toString('hex'), link: grantee === null ? newToken('khl') : null };
}

export function toUser(r: UserRow): User {
  return { name: r.name, admin: r.admin === 1, publicKey: r.public_key, quotaBytes: r.quota_bytes };
}

export function toSnap(r: SnapRow): SnapshotRow {
  return {
    id: r.id,
    owner: r.owner,
    author: r.author,
    manifest: r.manifest,
    record: r.record,
    signature: r.signature,
    imported: r.imported === 1,
    createdAt: r.created_at,
    sizeBytes: r.size_bytes,
  };
}

export function toShare(r: ShareDbRow): ShareRow {
  return {
    id: r.id,
    snapshot: r.snapshot,
    owner: r.owner,
    grantee: r.grantee,
    link: r.link_hash !== null,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
  };
}

export class SqliteSnapshotStore implements SnapshotStore {
  private readonly db: SqliteDatabase;

  constructor(file: string) {
    this.db = openGatewayDb(file);
    // FULL: a snapshot row that survives a crash must not outlive the commit that wrote it.
    this.db.pragma('synchronous = FULL');
    migrateSqlite(this.db, file);
  }

  async ensureAdmin(name: string, token: string): Promise<void> {
    // The token given at start is the admin's: a token once issued to another user is taken back from it.
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM users WHERE token_hash = ? AND name != ?').run(hashToken(token), name);
      this.db
        .prepare(
          `INSERT INTO users (name, token_hash, admin, public_key, quota_bytes, created_at) VALUES (?, ?, 1, NULL, 0, ?)
           ON CONFLICT(name) DO UPDATE SET token_hash = excluded.token_hash, admin = 1`,
        )
        .run(name, hashToken(token), Date.now());
    })();
  }

  async authenticate(token: string): Promise<User | undefined> {
    // Looked up by SHA-256 of a 192-bit random token: timing of the index lookup reveals nothing usable.
    const r = this.db.prepare('SELECT * FROM users WHERE token_hash = ?').get(hashToken(token)) as UserRow | undefined;
    return r === undefined ? undefined : toUser(r);
  }

  async getUser(name: string): Promise<User | undefined> {
    const r = this.db.prepare('SELECT * FROM users WHERE name = ?').get(name) as UserRow | undefined;
    return r === undefined ? undefined : toUser(r);
  }

  async listUsers(): Promise<Array<User & { usedBytes: number }>> {
    const rows = this.db.prepare('SELECT * FROM users ORDER BY name').all() as UserRow[];
    return rows.map((r) => ({ ...toUser(r), usedBytes: this.used(r.name) }));
  }

  async addUser(name: string, quotaBytes: number): Promise<string> {
    const token = newToken('kh');
    const res = this.db
      .prepare(
        `INSERT INTO users (name, token_hash, admin, public_key, quota_bytes, created_at) VALUES (?, ?, 0, NULL, ?, ?)
         ON CONFLICT(name) DO NOTHING`,
      )
      .run(name, hashToken(token), quotaBytes, Date.now());
    if (res.changes === 0) throw new StoreError('exists', `user ${JSON.stringify(name)} exists already; use user_token to give it a new token`);
    return token;
  }

  async rotateToken(name: string): Promise<string> {
    const token = newToken('kh');
    const res = this.db.prepare('UPDATE users SET token_hash = ? WHERE name = ?').run(hashToken(token), name);
    if (res.changes === 0) throw new StoreError('not_found', `no user ${JSON.stringify(name)}`);
    return token;
  }

  async setQuota(name: string, quotaBytes: number): Promise<void> {
    const res = this.db.prepare('UPDATE users SET quota_bytes = ? WHERE name = ?').run(quotaBytes, name);
    if (res.changes === 0) throw new StoreError('not_found', `no user ${JSON.stringify(name)}`);
  }

  async removeUser(name: string): Promise<void> {
    this.db.transaction(() => {
      const res = this.db.prepare('DELETE FROM users WHERE name = ?').run(name);
      if (res.changes === 0) throw new StoreError('not_found', `no user ${JSON.stringify(name)}`);
      // Its snapshots, refs, holds and shares go with it; gc then frees blobs nobody else needs.
      this.db.prepare('DELETE FROM snapshots WHERE owner = ?').run(name);
      this.db.prepare('DELETE FROM snapshot_refs WHERE owner = ?').run(name);
      this.db.prepare('DELETE FROM blob_holds WHERE user = ?').run(name);
      this.db.prepare('DELETE FROM link_redemptions WHERE user = ? OR share IN (SELECT id FROM shares WHERE owner = ?)').run(name, name);
      this.db.prepare('DELETE FROM shares WHERE owner = ? OR grantee = ?').run(name, name);
    })();
  }

  async setPublicKey(name: string, key: string): Promise<void> {
    this.db.prepare('UPDATE users SET public_key = ? WHERE name = ?').run(key, name);
  }

  async visibleDigests(user: string, digests: readonly string[], now: number): Promise<Set<string>> {
    // The list goes in as one JSON parameter: no limit on bound parameters, one statement per request.
    const rows = this.db
      .prepare(
        `SELECT DISTINCT d.value AS digest FROM json_each(@digests) d
         WHERE EXISTS (SELECT 1 FROM blob_holds WHERE user = @user AND digest = d.value)
            OR EXISTS (SELECT 1 FROM manifest_blobs m
                         JOIN snapshots p ON p.manifest = m.manifest
                         JOIN shares s ON s.owner = p.owner AND s.snapshot = p.id
                       WHERE m.digest = d.value AND ${ACTIVE_SHARE})`,
      )
      .all({ digests: JSON.stringify(digests), user, now }) as Array<{ digest: string }>;
    return new Set(rows.map((r) => r.digest));
  }

  async reserveBlobs(user: string, blobs: readonly BlobSize[], now: number): Promise<Reserve[]> {
    const touch = this.db.prepare('UPDATE blob_holds SET at = ? WHERE user = ? AND digest = ?');
    const insert = this.db.prepare('INSERT INTO blob_holds (user, digest, size, at) VALUES (?, ?, ?, ?)');
    // One transaction (one fsync under synchronous = FULL) per batch, not per blob.
    return this.db.transaction((): Reserve[] => {
      const quota = (this.db.prepare('SELECT quota_bytes FROM users WHERE name = ?').get(user) as { quota_bytes: number } | undefined)
        ?.quota_bytes ?? 0;
      let used = quota > 0 ? this.used(user) : 0;
      return blobs.map((b): Reserve => {
        if (touch.run(now, user, b.digest).changes > 0) return { ok: true };
        if (quota > 0 && used + b.size > quota) return { ok: false, used, quota };
        insert.run(user, b.digest, b.size, now);
        used += b.size;
        return { ok: true };
      });
    })();
  }

  async holdResult(user: string, digests: BlobSize[], now: number): Promise<Reserve & { adding: number }> {
    const held = this.db.prepare('SELECT 1 FROM blob_holds WHERE user = ? AND digest = ?');
    const ins = this.db.prepare(
      `INSERT INTO blob_holds (user, digest, size, at) VALUES (?, ?, ?, ?)
       ON CONFLICT(user, digest) DO UPDATE SET at = excluded.at`,
    );
    return this.db.transaction((): Reserve & { adding: number } => {
      const quota = (this.db.prepare('SELECT quota_bytes FROM users WHERE name = ?').get(user) as { quota_bytes: number } | undefined)
        ?.quota_bytes ?? 0;
      const unique = new Map(digests.map((d) => [d.digest, d.size]));
      const adding = [...unique].filter(([d]) => held.get(user, d) === undefined).reduce((n, [, size]) => n + size, 0);
      if (quota > 0 && adding > 0) {
        const used = this.used(user);
        if (used + adding > quota) return { ok: false, used, quota, adding };
      }
      for (const [d, size] of unique) ins.run(user, d, size, now);
      return { ok: true, adding };
    })();
  }

  async refreshHolds(user: string, digests: readonly string[], before: number, now: number): Promise<void> {
    // One statement over the list; holds refreshed a moment ago are left alone, so a warm hop writes (and fsyncs)
    // nothing here.
    this.db
      .prepare(
        `UPDATE blob_holds SET at = @now
         WHERE user = @user AND at < @before AND digest IN (SELECT value FROM json_each(@digests))`,
      )
      .run({ user, now, before, digests: JSON.stringify(digests) });
  }

  async usedBytes(user: string): Promise<number> {
    return this.used(user);
  }

  private used(user: string): number {
    return (this.db.prepare('SELECT COALESCE(SUM(size), 0) AS n FROM blob_holds WHERE user = ?').get(user) as { n: number }).n;
  }

  async ownedManifestSize(owner: string, manifest: string): Promise<number | undefined> {
    const r = this.db.prepare('SELECT size_bytes FROM snapshots WHERE owner = ? AND manifest = ? LIMIT 1').get(owner, manifest) as
      | { size_bytes: number }
      | undefined;
    return r?.size_bytes;
  }

  async insertSnapshot(row: SnapshotRow, blobs: BlobSize[] | null, ref: string | null, now: number): Promise<void> {
    this.db.transaction(() => {
      if (blobs !== null) {
        // Saving over content shared with you makes it yours to keep: it counts toward your quota like an upload.
        const held = this.db.prepare('SELECT 1 FROM blob_holds WHERE user = ? AND digest = ?');
        const adding = blobs.filter((b) => held.get(row.owner, b.digest) === undefined).reduce((n, b) => n + b.size, 0);
        const quota = (this.db.prepare('SELECT quota_bytes FROM users WHERE name = ?').get(row.owner) as { quota_bytes: number } | undefined)
          ?.quota_bytes ?? 0;
        const used = this.used(row.owner);
        if (quota > 0 && adding > 0 && used + adding > quota) {
          throw new StoreError('quota_exceeded', quotaMessage(used, quota, adding));
        }
        const mb = this.db.prepare('INSERT OR IGNORE INTO manifest_blobs (manifest, digest, size) VALUES (?, ?, ?)');
        const hold = this.db.prepare(
          `INSERT INTO blob_holds (user, digest, size, at) VALUES (?, ?, ?, ?)
           ON CONFLICT(user, digest) DO UPDATE SET at = excluded.at`,
        );
        for (const b of blobs) {
          mb.run(row.manifest, b.digest, b.size);
          hold.run(row.owner, b.digest, b.size, now);
        }
      }
      this.db
        .prepare(
          `INSERT OR IGNORE INTO snapshots (owner, id, author, manifest, record, signature, imported, created_at, size_bytes)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(row.owner, row.id, row.author, row.manifest, row.record, row.signature, row.imported ? 1 : 0, row.createdAt, row.sizeBytes);
      if (ref !== null) this.putRef(row.owner, ref, row.id, now);
    })();
  }

  async getSnapshot(owner: string, id: string): Promise<SnapshotRow | undefined> {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE owner = ? AND id = ?').get(owner, id) as SnapRow | undefined;
    return r === undefined ? undefined : toSnap(r);
  }

  async findVisible(user: string, prefix: string, now: number): Promise<Array<SnapshotRow & { shared: boolean }>> {
    const like = `${prefix}%`;
    const own = (this.db.prepare('SELECT * FROM snapshots WHERE owner = ? AND id LIKE ? LIMIT 20').all(user, like) as SnapRow[]).map(
      (r) => ({ ...toSnap(r), shared: false }),
    );
    const shared = (
      this.db
        .prepare(
          `SELECT DISTINCT p.* FROM snapshots p JOIN shares s ON s.owner = p.owner AND s.snapshot = p.id
           WHERE p.id LIKE @like AND p.owner != @user AND ${ACTIVE_SHARE} LIMIT 20`,
        )
        .all({ like, user, now }) as SnapRow[]
    ).map((r) => ({ ...toSnap(r), shared: true }));
    return [...own, ...shared];
  }

  async listOwn(owner: string): Promise<SnapshotRow[]> {
    return (this.db.prepare('SELECT * FROM snapshots WHERE owner = ? ORDER BY created_at, id').all(owner) as SnapRow[]).map(toSnap);
  }

  async listSharedWith(user: string, now: number): Promise<Array<SnapshotRow & { shareId: string; expiresAt: number | null }>> {
    const rows = this.db
      .prepare(
        `SELECT p.*, s.id AS share_id, s.expires_at AS share_expires FROM snapshots p
           JOIN shares s ON s.owner = p.owner AND s.snapshot = p.id
         WHERE p.owner != @user AND ${ACTIVE_SHARE} ORDER BY p.created_at`,
      )
      .all({ user, now }) as Array<SnapRow & { share_id: string; share_expires: number | null }>;
    return rows.map((r) => ({ ...toSnap(r), shareId: r.share_id, expiresAt: r.share_expires }));
  }

  async deleteSnapshot(owner: string, id: string): Promise<void> {
    this.db.transaction(() => {
      const row = this.db.prepare('SELECT manifest FROM snapshots WHERE owner = ? AND id = ?').get(owner, id) as
        | { manifest: string }
        | undefined;
      this.db.prepare('DELETE FROM snapshots WHERE owner = ? AND id = ?').run(owner, id);
      if (row !== undefined) {
        // Deleting gives the quota back at once: holds no other own snapshot needs go now (the bytes wait for gc).
        this.db
          .prepare(
            `DELETE FROM blob_holds WHERE user = @owner
               AND digest IN (SELECT digest FROM manifest_blobs WHERE manifest = @manifest)
               AND NOT EXISTS (SELECT 1 FROM snapshots p JOIN manifest_blobs m ON m.manifest = p.manifest
                               WHERE p.owner = @owner AND m.digest = blob_holds.digest)`,
          )
          .run({ owner, manifest: row.manifest });
      }
      this.db.prepare('DELETE FROM snapshot_refs WHERE owner = ? AND snapshot = ?').run(owner, id);
      this.db
        .prepare('DELETE FROM link_redemptions WHERE share IN (SELECT id FROM shares WHERE owner = ? AND snapshot = ?)')
        .run(owner, id);
      this.db.prepare('DELETE FROM shares WHERE owner = ? AND snapshot = ?').run(owner, id);
    })();
  }

  private putRef(owner: string, name: string, snapshot: string, now: number): void {
    this.db
      .prepare(
        `INSERT INTO snapshot_refs (owner, name, snapshot, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(owner, name) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at`,
      )
      .run(owner, name, snapshot, now);
  }

  async getRef(owner: string, name: string): Promise<string | undefined> {
    const r = this.db.prepare('SELECT snapshot FROM snapshot_refs WHERE owner = ? AND name = ?').get(owner, name) as
      | { snapshot: string }
      | undefined;
    return r?.snapshot;
  }

  async listRefs(owner: string): Promise<Array<{ name: string; snapshot: string }>> {
    return this.db.prepare('SELECT name, snapshot FROM snapshot_refs WHERE owner = ? ORDER BY name').all(owner) as Array<{
      name: string;
      snapshot: string;
    }>;
  }

  async deleteRef(owner: string, name: string): Promise<boolean> {
    return this.db.prepare('DELETE FROM snapshot_refs WHERE owner = ? AND name = ?').run(owner, name).changes > 0;
  }

  async addShare(s: NewShare, now: number): Promise<ShareKeys> {
    const { id, link } = newShareKeys(s.grantee);
    this.db
      .prepare(
        `INSERT INTO shares (id, snapshot, owner, grantee, link_hash, created_at, expires_at, revoked_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, NULL)`,
      )
      .run(id, s.snapshot, s.owner, s.grantee, link === null ? null : hashToken(link), now, s.expiresAt);
    return { id, link };
  }

  async redeemLink(user: string, link: string, now: number): Promise<ShareRow | undefined> {
    return this.db.transaction((): ShareRow | undefined => {
      const r = this.db
        .prepare('SELECT * FROM shares WHERE link_hash = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)')
        .get(hashToken(link), now) as ShareDbRow | undefined;
      if (r === undefined) return undefined;
      this.db.prepare('INSERT OR IGNORE INTO link_redemptions (share, user) VALUES (?, ?)').run(r.id, user);
      return toShare(r);
    })();
  }

  async listShares(owner: string, snapshot: string): Promise<ShareRow[]> {
    return (
      this.db.prepare('SELECT * FROM shares WHERE owner = ? AND snapshot = ? ORDER BY created_at').all(owner, snapshot) as ShareDbRow[]
    ).map(toShare);
  }

  async revokeShare(owner: string, shareId: string, now: number): Promise<boolean> {
    return (
      this.db.prepare('UPDATE shares SET revoked_at = ? WHERE owner = ? AND id = ? AND revoked_at IS NULL').run(now, owner, shareId)
        .changes > 0
    );
  }

  async liveDigests(): Promise<Set<string>> {
    // manifest_blobs rows of manifests no snapshot names any more are dropped here, under gc's lock.
    this.db.prepare('DELETE FROM manifest_blobs WHERE manifest NOT IN (SELECT manifest FROM snapshots)').run();
    const rows = this.db.prepare('SELECT DISTINCT digest FROM manifest_blobs').pluck().all() as string[];
    return new Set(rows);
  }

  async dropStaleHolds(before: number): Promise<number> {
    return this.db
      .prepare(
        `DELETE FROM blob_holds WHERE at < ? AND NOT EXISTS (
           SELECT 1 FROM snapshots p JOIN manifest_blobs m ON m.manifest = p.manifest
           WHERE p.owner = blob_holds.user AND m.digest = blob_holds.digest)`,
      )
      .run(before).changes;
  }

  async heldDigests(): Promise<Set<string>> {
    return new Set(this.db.prepare('SELECT DISTINCT digest FROM blob_holds').pluck().all() as string[]);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
