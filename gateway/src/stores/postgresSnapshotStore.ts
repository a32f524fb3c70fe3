// Users, blob holds, snapshots, refs and shares in PostgreSQL: the same interface and rules as SqliteSnapshotStore.
// Several gateways may share the database, so every check-then-write runs in one transaction that first locks the
// user's row (SELECT ... FOR UPDATE): two reservations against one quota, from any gateways, take turns.
import pg from 'pg';
import { quotaMessage } from '../quota.js';
import {
  BlobSize,
  NewShare,
  Reserve,
  ShareDbRow,
  ShareKeys,
  ShareRow,
  SnapRow,
  SnapshotRow,
  SnapshotStore,
  StoreError,
  User,
  UserRow,
  hashToken,
  newShareKeys,
  newToken,
  toShare,
  toSnap,
  toUser,
} from '../snapshotStore.js';
import { inTransaction } from './postgres.js';

type Queryable = pg.Pool | pg.PoolClient;

/**
 * A share is active for a user when it names the user or a link the user redeemed, is not revoked, not expired;
 * `user` and `now` are the placeholders ($n) that hold them.
 */
const activeShare = (user: string, now: string): string => `s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > ${now})
  AND (s.grantee = ${user} OR s.id IN (SELECT share FROM link_redemptions WHERE "user" = ${user}))`;

/**
 * One row per distinct digest (Postgres refuses an upsert that names a row twice), the first size seen, in digest
 * order: two transactions writing rows of one key set take their row locks in the same order, so neither deadlocks.
 */
function distinct(blobs: readonly BlobSize[]): BlobSize[] {
  const seen = new Map<string, number>();
  for (const b of blobs) if (!seen.has(b.digest)) seen.set(b.digest, b.size);
  return [...seen].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)).map(([digest, size]) => ({ digest, size }));
}

export class PostgresSnapshotStore implements SnapshotStore {
  /** On a pool the caller owns and ends (openStores). */
  constructor(private readonly pool: pg.Pool) {}

  async ensureAdmin(name: string, token: string): Promise<void> {
    // The token given at start is the admin's: a token once issued to another user is taken back from it.
    await inTransaction(this.pool, async (c) => {
      await c.query('DELETE FROM users WHERE token_hash = $1 AND name <> $2', [hashToken(token), name]);
      await c.query(
        `INSERT INTO users (name, token_hash, admin, public_key, quota_bytes, created_at) VALUES ($1, $2, 1, NULL, 0, $3)
         ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, admin = 1`,
        [name, hashToken(token), Date.now()],
      );
    });
  }

  async authenticate(token: string): Promise<User | undefined> {
    const { rows } = await this.pool.query<UserRow>('SELECT * FROM users WHERE token_hash = $1', [hashToken(token)]);
    return rows[0] === undefined ? undefined : toUser(rows[0]);
  }

  async getUser(name: string): Promise<User | undefined> {
    const { rows } = await this.pool.query<UserRow>('SELECT * FROM users WHERE name = $1', [name]);
    return rows[0] === undefined ? undefined : toUser(rows[0]);
  }

  async listUsers(): Promise<Array<User & { usedBytes: number }>> {
    // COLLATE "C": byte order, as SQLite sorts, whatever locale the database was made with.
    const { rows } = await this.pool.query<UserRow & { used: number }>(
      `SELECT u.*, (SELECT COALESCE(SUM(h.size), 0) FROM blob_holds h WHERE h."user" = u.name)::bigint AS used
       FROM users u ORDER BY u.name COLLATE "C"`,
    );
    return rows.map((r) => ({ ...toUser(r), usedBytes: r.used }));
  }

  async addUser(name: string, quotaBytes: number): Promise<string> {
    const token = newToken('kh');
    const res = await this.pool.query(
      `INSERT INTO users (name, token_hash, admin, public_key, quota_bytes, created_at) VALUES ($1, $2, 0, NULL, $3, $4)
       ON CONFLICT (name) DO NOTHING`,
      [name, hashToken(token), quotaBytes, Date.now()],
    );
    if (res.rowCount === 0) throw new StoreError('exists', `user ${JSON.stringify(name)} exists already; use user_token to give it a new token`);
    return token;
  }

  async rotateToken(name: string): Promise<string> {
    const token = newToken('kh');
    const res = await this.pool.query('UPDATE users SET token_hash = $1 WHERE name = $2', [hashToken(token), name]);
    if (res.rowCount === 0) throw new StoreError('not_found', `no user ${JSON.stringify(name)}`);
    return token;
  }

  async setQuota(name: string, quotaBytes: number): Promise<void> {
    const res = await this.pool.query('UPDATE users SET quota_bytes = $1 WHERE name = $2', [quotaBytes, name]);
    if (res.rowCount === 0) throw new StoreError('not_found', `no user ${JSON.stringify(name)}`);
  }

  async removeUser(name: string): Promise<void> {
    await inTransaction(this.pool, async (c) => {
      const res = await c.query('DELETE FROM users WHERE name = $1', [name]);
      if (res.rowCount === 0) throw new StoreError('not_found', `no user ${JSON.stringify(name)}`);
      // Its snapshots, refs, holds and shares go with it; gc then frees blobs nobody else needs.
      await c.query('DELETE FROM snapshots WHERE owner = $1', [name]);
      await c.query('DELETE FROM snapshot_refs WHERE owner = $1', [name]);
      await c.query('DELETE FROM blob_holds WHERE "user" = $1', [name]);
      await c.query('DELETE FROM link_redemptions WHERE "user" = $1 OR share IN (SELECT id FROM shares WHERE owner = $1)', [name]);
      await c.query('DELETE FROM shares WHERE owner = $1 OR grantee = $1', [name]);
    });
  }

  async setPublicKey(name: string, key: string): Promise<void> {
    await this.pool.query('UPDATE users SET public_key = $1 WHERE name = $2', [key, name]);
  }

  async visibleDigests(user: string, digests: readonly string[], now: number): Promise<Set<string>> {
    // The list goes in as one array parameter: one statement per request, however long.
    const { rows } = await this.pool.query<{ digest: string }>(
      `SELECT DISTINCT d.value AS digest FROM unnest($1::text[]) AS d(value)
       WHERE EXISTS (SELECT 1 FROM blob_holds WHERE "user" = $2 AND digest = d.value)
          OR EXISTS (SELECT 1 FROM manifest_blobs m
                       JOIN snapshots p ON p.manifest = m.manifest
                       JOIN shares s ON s.owner = p.owner AND s.snapshot = p.id
                     WHERE m.digest = d.value AND ${activeShare('$2', '$3')})`,
      [digests, user, now],
    );
    return new Set(rows.map((r) => r.digest));
  }

  /** The user's quota (0 = none), its row locked until the transaction ends: reservations of one user take turns. */
  private async lockQuota(c: pg.PoolClient, user: string): Promise<number> {
    const { rows } = await c.query<{ quota_bytes: number }>('SELECT quota_bytes FROM users WHERE name = $1 FOR UPDATE', [user]);
    return rows[0]?.quota_bytes ?? 0;
  }

  private async used(q: Queryable, user: string): Promise<number> {
    const { rows } = await q.query<{ n: number }>('SELECT COALESCE(SUM(size), 0)::bigint AS n FROM blob_holds WHERE "user" = $1', [user]);
    return rows[0]?.n ?? 0;
  }

  /** Which of `digests` the user holds already. */
  private async heldOf(c: pg.PoolClient, user: string, digests: string[]): Promise<Set<string>> {
    const { rows } = await c.query<{ digest: string }>('SELECT digest FROM blob_holds WHERE "user" = $1 AND digest = ANY($2::text[])', [
      user,
      digests,
    ]);
    return new Set(rows.map((r) => r.digest));
  }

  /** Holds `blobs` for the user as of `now` (new ones inserted, held ones refreshed), in one statement. */
  private async hold(c: pg.PoolClient, user: string, blobs: BlobSize[], now: number): Promise<void> {
    if (blobs.length === 0) return;
    await c.query(
      `INSERT INTO blob_holds ("user", digest, size, at)
       SELECT $1, t.digest, t.size, $4 FROM unnest($2::text[], $3::bigint[]) AS t(digest, size)
       ON CONFLICT ("user", digest) DO UPDATE SET at = excluded.at`,
      [user, blobs.map((b) => b.digest), blobs.map((b) => b.size), now],
    );
  }

  async reserveBlobs(user: string, blobs: readonly BlobSize[], now: number): Promise<Reserve[]> {
    // One transaction and a handful of statements per batch, not per blob; the blobs are weighed in order, as SQLite's.
    return inTransaction(this.pool, async (c) => {
      const quota = await this.lockQuota(c, user);
      const heldBefore = await this.heldOf(c, user, distinct(blobs).map((b) => b.digest));
      const held = new Set(heldBefore);
      let used = quota > 0 ? await this.used(c, user) : 0;
      const taken: BlobSize[] = [];
      const answers = blobs.map((b): Reserve => {
        if (held.has(b.digest)) return { ok: true };
        if (quota > 0 && used + b.size > quota) return { ok: false, used, quota };
        held.add(b.digest);
        taken.push(b);
        used += b.size;
        return { ok: true };
      });
      // The ones held before are refreshed, the taken ones inserted: both are holds as of now.
      if (heldBefore.size > 0) {
        await c.query('UPDATE blob_holds SET at = $1 WHERE "user" = $2 AND digest = ANY($3::text[])', [now, user, [...heldBefore]]);
      }
      await this.hold(c, user, distinct(taken), now);
      return answers;
    });
  }

  async holdResult(user: string, digests: BlobSize[], now: number): Promise<Reserve & { adding: number }> {
    return inTransaction(this.pool, async (c) => {
      const quota = await this.lockQuota(c, user);
      const unique = distinct(digests);
      const held = await this.heldOf(c, user, unique.map((b) => b.digest));
      const adding = unique.filter((b) => !held.has(b.digest)).reduce((n, b) => n + b.size, 0);
      if (quota > 0 && adding > 0) {
        const used = await this.used(c, user);
        if (used + adding > quota) return { ok: false, used, quota, adding };
      }
      await this.hold(c, user, unique, now);
      return { ok: true, adding };
    });
  }

  async refreshHolds(user: string, digests: readonly string[], before: number, now: number): Promise<void> {
    // Holds refreshed a moment ago are left alone, so a warm hop writes nothing here.
    await this.pool.query('UPDATE blob_holds SET at = $1 WHERE "user" = $2 AND at < $3 AND digest = ANY($4::text[])', [
      now,
      user,
      before,
      digests,
    ]);
  }

  async usedBytes(user: string): Promise<number> {
    return this.used(this.pool, user);
  }

  async ownedManifestSize(owner: string, manifest: string): Promise<number | undefined> {
    const { rows } = await this.pool.query<{ size_bytes: number }>(
      'SELECT size_bytes FROM snapshots WHERE owner = $1 AND manifest = $2 LIMIT 1',
      [owner, manifest],
    );
    return rows[0]?.size_bytes;
  }

  async insertSnapshot(row: SnapshotRow, blobs: BlobSize[] | null, ref: string | null, now: number): Promise<void> {
    await inTransaction(this.pool, async (c) => {
      if (blobs !== null) {
        // Saving over content shared with you makes it yours to keep: it counts toward your quota like an upload.
        const quota = await this.lockQuota(c, row.owner);
        const unique = distinct(blobs);
        const held = await this.heldOf(c, row.owner, unique.map((b) => b.digest));
        const adding = unique.filter((b) => !held.has(b.digest)).reduce((n, b) => n + b.size, 0);
        if (quota > 0 && adding > 0) {
          const used = await this.used(c, row.owner);
          if (used + adding > quota) throw new StoreError('quota_exceeded', quotaMessage(used, quota, adding));
        }
        await c.query(
          `INSERT INTO manifest_blobs (manifest, digest, size)
           SELECT $1, t.digest, t.size FROM unnest($2::text[], $3::bigint[]) AS t(digest, size)
           ON CONFLICT DO NOTHING`,
          [row.manifest, unique.map((b) => b.digest), unique.map((b) => b.size)],
        );
        await this.hold(c, row.owner, unique, now);
      }
      await c.query(
        `INSERT INTO snapshots (owner, id, author, manifest, record, signature, imported, created_at, size_bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
        [row.owner, row.id, row.author, row.manifest, row.record, row.signature, row.imported ? 1 : 0, row.createdAt, row.sizeBytes],
      );
      if (ref !== null) await this.putRef(c, row.owner, ref, row.id, now);
    });
  }

  async getSnapshot(owner: string, id: string): Promise<SnapshotRow | undefined> {
    const { rows } = await this.pool.query<SnapRow>('SELECT * FROM snapshots WHERE owner = $1 AND id = $2', [owner, id]);
    return rows[0] === undefined ? undefined : toSnap(rows[0]);
  }

  async findVisible(user: string, prefix: string, now: number): Promise<Array<SnapshotRow & { shared: boolean }>> {
    const like = `${prefix}%`;
    const own = (await this.pool.query<SnapRow>('SELECT * FROM snapshots WHERE owner = $1 AND id LIKE $2 LIMIT 20', [user, like])).rows;
    const shared = (
      await this.pool.query<SnapRow>(
        `SELECT DISTINCT p.* FROM snapshots p JOIN shares s ON s.owner = p.owner AND s.snapshot = p.id
         WHERE p.id LIKE $1 AND p.owner <> $2 AND ${activeShare('$2', '$3')} LIMIT 20`,
        [like, user, now],
      )
    ).rows;
    return [...own.map((r) => ({ ...toSnap(r), shared: false })), ...shared.map((r) => ({ ...toSnap(r), shared: true }))];
  }

  async listOwn(owner: string): Promise<SnapshotRow[]> {
    const { rows } = await this.pool.query<SnapRow>('SELECT * FROM snapshots WHERE owner = $1 ORDER BY created_at, id COLLATE "C"', [owner]);
    return rows.map(toSnap);
  }

  async listSharedWith(user: string, now: number): Promise<Array<SnapshotRow & { shareId: string; expiresAt: number | null }>> {
    const { rows } = await this.pool.query<SnapRow & { share_id: string; share_expires: number | null }>(
      `SELECT p.*, s.id AS share_id, s.expires_at AS share_expires FROM snapshots p
         JOIN shares s ON s.owner = p.owner AND s.snapshot = p.id
       WHERE p.owner <> $1 AND ${activeShare('$1', '$2')} ORDER BY p.created_at`,
      [user, now],
    );
    return rows.map((r) => ({ ...toSnap(r), shareId: r.share_id, expiresAt: r.share_expires }));
  }

  async deleteSnapshot(owner: string, id: string): Promise<void> {
    await inTransaction(this.pool, async (c) => {
      const { rows } = await c.query<{ manifest: string }>('DELETE FROM snapshots WHERE owner = $1 AND id = $2 RETURNING manifest', [owner, id]);
      if (rows[0] !== undefined) {
        // Deleting gives the quota back at once: holds no other own snapshot needs go now (the bytes wait for gc).
        await c.query(
          `DELETE FROM blob_holds WHERE "user" = $1
             AND digest IN (SELECT digest FROM manifest_blobs WHERE manifest = $2)
             AND NOT EXISTS (SELECT 1 FROM snapshots p JOIN manifest_blobs m ON m.manifest = p.manifest
                             WHERE p.owner = $1 AND m.digest = blob_holds.digest)`,
          [owner, rows[0].manifest],
        );
      }
      await c.query('DELETE FROM snapshot_refs WHERE owner = $1 AND snapshot = $2', [owner, id]);
      await c.query('DELETE FROM link_redemptions WHERE share IN (SELECT id FROM shares WHERE owner = $1 AND snapshot = $2)', [owner, id]);
      await c.query('DELETE FROM shares WHERE owner = $1 AND snapshot = $2', [owner, id]);
    });
  }

  private async putRef(c: pg.PoolClient, owner: string, name: string, snapshot: string, now: number): Promise<void> {
    await c.query(
      `INSERT INTO snapshot_refs (owner, name, snapshot, updated_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (owner, name) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at`,
      [owner, name, snapshot, now],
    );
  }

  async getRef(owner: string, name: string): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ snapshot: string }>('SELECT snapshot FROM snapshot_refs WHERE owner = $1 AND name = $2', [
      owner,
      name,
    ]);
    return rows[0]?.snapshot;
  }

  async listRefs(owner: string): Promise<Array<{ name: string; snapshot: string }>> {
    const { rows } = await this.pool.query<{ name: string; snapshot: string }>(
      'SELECT name, snapshot FROM snapshot_refs WHERE owner = $1 ORDER BY name COLLATE "C"',
      [owner],
    );
    return rows;
  }

  async deleteRef(owner: string, name: string): Promise<boolean> {
    return ((await this.pool.query('DELETE FROM snapshot_refs WHERE owner = $1 AND name = $2', [owner, name])).rowCount ?? 0) > 0;
  }

  async addShare(s: NewShare, now: number): Promise<ShareKeys> {
    const { id, link } = newShareKeys(s.grantee);
    await this.pool.query(
      `INSERT INTO shares (id, snapshot, owner, grantee, link_hash, created_at, expires_at, revoked_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)`,
      [id, s.snapshot, s.owner, s.grantee, link === null ? null : hashToken(link), now, s.expiresAt],
    );
    return { id, link };
  }

  async redeemLink(user: string, link: string, now: number): Promise<ShareRow | undefined> {
    return inTransaction(this.pool, async (c) => {
      const { rows } = await c.query<ShareDbRow>(
        'SELECT * FROM shares WHERE link_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)',
        [hashToken(link), now],
      );
      const r = rows[0];
      if (r === undefined) return undefined;
      await c.query('INSERT INTO link_redemptions (share, "user") VALUES ($1, $2) ON CONFLICT DO NOTHING', [r.id, user]);
      return toShare(r);
    });
  }

  async listShares(owner: string, snapshot: string): Promise<ShareRow[]> {
    const { rows } = await this.pool.query<ShareDbRow>('SELECT * FROM shares WHERE owner = $1 AND snapshot = $2 ORDER BY created_at', [
      owner,
      snapshot,
    ]);
    return rows.map(toShare);
  }

  async revokeShare(owner: string, shareId: string, now: number): Promise<boolean> {
    const res = await this.pool.query('UPDATE shares SET revoked_at = $1 WHERE owner = $2 AND id = $3 AND revoked_at IS NULL', [
      now,
      owner,
      shareId,
    ]);
    return (res.rowCount ?? 0) > 0;
  }

  async liveDigests(): Promise<Set<string>> {
    // manifest_blobs rows of manifests no snapshot names any more are dropped here, under gc's lock.
    await this.pool.query('DELETE FROM manifest_blobs WHERE manifest NOT IN (SELECT manifest FROM snapshots)');
    const { rows } = await this.pool.query<{ digest: string }>('SELECT DISTINCT digest FROM manifest_blobs');
    return new Set(rows.map((r) => r.digest));
  }

  async dropStaleHolds(before: number): Promise<number> {
    const res = await this.pool.query(
      `DELETE FROM blob_holds WHERE at < $1 AND NOT EXISTS (
         SELECT 1 FROM snapshots p JOIN manifest_blobs m ON m.manifest = p.manifest
         WHERE p.owner = blob_holds."user" AND m.digest = blob_holds.digest)`,
      [before],
    );
    return res.rowCount ?? 0;
  }

  async heldDigests(): Promise<Set<string>> {
    const { rows } = await this.pool.query<{ digest: string }>('SELECT DISTINCT digest FROM blob_holds');
    return new Set(rows.map((r) => r.digest));
  }

  async close(): Promise<void> {
    // The pool is openStores'.
  }
}
