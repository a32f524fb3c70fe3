// The WebSocket ops for snapshots, users, sharing and gc (ARCHITECTURE.md, "Snapshots, users and trust").
// Transport-free: wsApi hands each request here with the connection's user and sends back what comes out.
import { parseDigest } from '@kernelhop/kernel-snapshot';
import { UserBlobView } from './access.js';
import { BlobStore } from './blobStore.js';
import { Collector, DEFAULT_GRACE_MS } from './gc.js';
import { RecordError, SnapshotRecord, isSnapshotId, parseRecord, recordBytes, recordId, verifyRecord } from './signatures.js';
import { checkSnapshot } from './snapshotCheck.js';
import { SnapshotRow, SnapshotStore, StoreError, User } from './snapshotStore.js';

type Json = Record<string, unknown>;

/** A request refused with an error code of the protocol; the socket stays open. */
export class OpError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export const SNAPSHOT_OPS = [
  'whoami',
  'key_register',
  'snapshot_save',
  'snapshot_get',
  'snapshot_list',
  'snapshot_log',
  'snapshot_rm',
  'snapshot_share',
  'snapshot_revoke',
  'gc',
  'user_add',
  'user_token',
  'user_quota',
  'user_rm',
  'user_list',
] as const;
export type SnapshotOp = (typeof SNAPSHOT_OPS)[number];

const NAME = /^[A-Za-z0-9][A-Za-z0-9._@/-]{0,127}$/;
const USER = /^[a-z][a-z0-9_.-]{0,31}$/;
const LOG_LIMIT = 200;

interface Visible {
  row: SnapshotRow;
  shared: boolean;
}

export class SnapshotApi {
  constructor(
    private readonly store: BlobStore,
    private readonly snapshots: SnapshotStore,
    private readonly collector: Collector,
  ) {}

  isOp(op: string): op is SnapshotOp {
    return (SNAPSHOT_OPS as readonly string[]).includes(op);
  }

  async handle(user: User, op: SnapshotOp, req: Json): Promise<Json> {
    try {
      return await this.dispatch(user, op, req);
    } catch (e) {
      if (e instanceof RecordError) throw new OpError('bad_request', e.message);
      if (e instanceof StoreError) throw new OpError(e.code, e.message);
      throw e;
    }
  }

  private async dispatch(user: User, op: SnapshotOp, req: Json): Promise<Json> {
    switch (op) {
      case 'whoami':
        return {
          user: user.name,
          admin: user.admin,
          public_key: user.publicKey,
          used_bytes: await this.snapshots.usedBytes(user.name),
          quota_bytes: user.quotaBytes,
        };
      case 'key_register': {
        const key = str(req.public_key, 'public_key');
        if (!/^[A-Za-z0-9+/]{43}=$/.test(key)) throw new OpError('bad_request', 'public_key must be base64 of a raw 32-byte Ed25519 key');
        await this.snapshots.setPublicKey(user.name, key);
        user.publicKey = key;
        return {};
      }
      case 'snapshot_save':
        return this.save(user, req);
      case 'snapshot_get': {
        const v = await this.resolveRequest(user, req);
        const out: Json = { snapshot: await this.describe(v), record: JSON.parse(v.row.record), signature: v.row.signature };
        if (!v.shared) out.shares = await this.shares(user, v.row.id);
        return out;
      }
      case 'snapshot_list': {
        const own = await this.snapshots.listOwn(user.name);
        const shared = await this.snapshots.listSharedWith(user.name, Date.now());
        return {
          snapshots: await Promise.all(own.map((row) => this.describe({ row, shared: false }))),
          shared: await Promise.all(
            shared.map(async (row) => ({ ...(await this.describe({ row, shared: true })), share: row.shareId, expires_at: row.expiresAt })),
          ),
          refs: Object.fromEntries((await this.snapshots.listRefs(user.name)).map((r) => [r.name, r.snapshot])),
        };
      }
      case 'snapshot_log':
        return { log: await this.log(user, await this.resolveRequest(user, req), req.limit) };
      case 'snapshot_rm': {
        if (req.name !== undefined) {
          const name = refName(req.name);
          if (!(await this.snapshots.deleteRef(user.name, name))) throw notYours(name);
          return {};
        }
        const v = await this.resolve(user, str(req.ref, 'ref'));
        if (v.shared) throw notYours(str(req.ref, 'ref'));
        await this.snapshots.deleteSnapshot(user.name, v.row.id);
        return { snapshot: v.row.id };
      }
      case 'snapshot_share':
        return this.share(user, req);
      case 'snapshot_revoke': {
        const id = str(req.share, 'share');
        if (!(await this.snapshots.revokeShare(user.name, id, Date.now()))) {
          throw new OpError('forbidden', `share ${id}: not found, not yours, or revoked already`);
        }
        return {};
      }
      case 'gc': {
        admin(user, op);
        const grace = req.grace_s ?? DEFAULT_GRACE_MS / 1000;
        if (typeof grace !== 'number' || !(grace >= 0)) throw new OpError('bad_request', 'grace_s must be a number of seconds, 0 or more');
        return { report: await this.collector.collect(grace * 1000) };
      }
      case 'user_add': {
        admin(user, op);
        const name = userName(req.name);
        return { user: name, token: await this.snapshots.addUser(name, quotaBytes(req.quota_bytes ?? 0)) };
      }
      case 'user_quota': {
        admin(user, op);
        const name = userName(req.name);
        const quota = quotaBytes(req.quota_bytes);
        await this.snapshots.setQuota(name, quota);
        return { user: name, quota_bytes: quota, used_bytes: await this.snapshots.usedBytes(name) };
      }
      case 'user_token': {
        admin(user, op);
        const name = userName(req.name);
        if ((await this.snapshots.getUser(name))?.admin) {
          throw new OpError('bad_request', "the admin's token is the KERNELHOP_TOKEN the gateway was started with; change it there");
        }
        return { user: name, token: await this.snapshots.rotateToken(name) };
      }
      case 'user_rm': {
        admin(user, op);
        const name = userName(req.name);
        if (name === user.name) throw new OpError('bad_request', 'an admin cannot remove itself');
        await this.snapshots.removeUser(name);
        return {};
      }
      case 'user_list':
        admin(user, op);
        return {
          users: (await this.snapshots.listUsers()).map((u) => ({
            name: u.name,
            admin: u.admin,
            has_key: u.publicKey !== null,
            used_bytes: u.usedBytes,
            quota_bytes: u.quotaBytes,
          })),
        };
    }
  }

  // ---- save ----

  private async save(user: User, req: Json): Promise<Json> {
    const record = parseRecord(req.record);
    const signature = str(req.signature, 'signature');
    const imported = req.import === true;
    const name = req.name === undefined || req.name === null ? null : refName(req.name);
    if (!imported) {
      // The gateway vouches for the author of what is saved here: only as yourself, with your registered key.
      if (record.author !== user.name) {
        throw new OpError('forbidden', `record.author is ${JSON.stringify(record.author)} but you are ${JSON.stringify(user.name)}`);
      }
      if (user.publicKey === null) throw new OpError('no_key', 'register your public key first (op key_register)');
      if (record.key !== user.publicKey) {
        throw new OpError('bad_signature', 'record.key is not the public key registered for you; register the key you sign with');
      }
    }
    if (!verifyRecord(record, signature)) {
      throw new OpError('bad_signature', 'the signature does not verify against record.key; nothing saved');
    }
    const id = recordId(record);
    const now = Date.now();
    for (const p of record.parents) {
      // History from elsewhere may be absent from this gateway; a save made here must follow what its author can read.
      if (!imported && (await this.visible(user, p)) === undefined) throw notYours(p);
    }
    const manifest = parseDigest(record.manifest);
    const sizeBytes = await this.collector.lock.run(async () => {
      const known = await this.snapshots.ownedManifestSize(user.name, record.manifest);
      let blobs: Array<{ digest: string; size: number }> | null = null;
      let size: number;
      if (known !== undefined) {
        // Already saved by this user, so complete and held: a fork or a second name costs one row (metadata only).
        size = known;
      } else {
        // Write order: the chunks and the manifest must be there, and be this user's to name, before any row is.
        const check = await checkSnapshot(new UserBlobView(this.store, this.snapshots, user.name), manifest);
        if (!check.ok) throw new OpError(check.code, check.message);
        blobs = [manifest, ...check.chunks].map((d) => ({ digest: `${d.hash}/${d.sizeBytes}`, size: d.sizeBytes }));
        size = blobs.reduce((n, b) => n + b.size, 0);
      }
      await this.snapshots.insertSnapshot(
        {
          id,
          owner: user.name,
          author: record.author,
          manifest: record.manifest,
          record: recordBytes(record).toString('utf8'),
          signature,
          imported,
          createdAt: now,
          sizeBytes: size,
        },
        blobs,
        name,
        now,
      );
      return size;
    });
    return { snapshot: id, size_bytes: sizeBytes };
  }

  // ---- sharing ----

  private async share(user: User, req: Json): Promise<Json> {
    const v = await this.resolve(user, str(req.ref, 'ref'));
    if (v.shared) throw notYours(str(req.ref, 'ref'));
    const expires = req.expires_s;
    if (expires !== undefined && (typeof expires !== 'number' || !(expires > 0))) {
      throw new OpError('bad_request', 'expires_s must be a positive number of seconds');
    }
    let grantee: string | null = null;
    if (req.link !== true) {
      grantee = userName(req.with);
      if (grantee === user.name) throw new OpError('bad_request', 'the snapshot is yours already');
      if ((await this.snapshots.getUser(grantee)) === undefined) throw new OpError('not_found', `no user ${JSON.stringify(grantee)}`);
    }
    const now = Date.now();
    const expiresAt = expires === undefined ? null : now + Math.round(expires * 1000);
    const { id, link } = await this.snapshots.addShare({ owner: user.name, snapshot: v.row.id, grantee, expiresAt }, now);
    return { share: id, snapshot: v.row.id, with: grantee, link, expires_at: expiresAt };
  }

  private async shares(user: User, snapshot: string): Promise<Json[]> {
    return (await this.snapshots.listShares(user.name, snapshot)).map((s) => ({
      share: s.id,
      with: s.grantee,
      link: s.link,
      created_at: s.createdAt,
      expires_at: s.expiresAt,
      revoked_at: s.revokedAt,
    }));
  }

  // ---- reading ----

  private async resolveRequest(user: User, req: Json): Promise<Visible> {
    if (typeof req.link === 'string') return this.redeem(user, req.link);
    return this.resolve(user, str(req.ref, 'ref'));
  }

  /** A ref name of the user's, a link, or a snapshot id (or a prefix of 6+ hex digits) the user may read. */
  private async resolve(user: User, ref: string): Promise<Visible> {
    if (ref.startsWith('khl_')) return this.redeem(user, ref);
    const named = await this.snapshots.getRef(user.name, ref);
    if (named !== undefined) {
      const row = await this.snapshots.getSnapshot(user.name, named);
      if (row !== undefined) return { row, shared: false };
    }
    if (!/^[0-9a-f]{6,64}$/.test(ref)) throw notYours(ref);
    const found = await this.snapshots.findVisible(user.name, ref, Date.now());
    const ids = [...new Set(found.map((f) => f.id))];
    if (ids.length === 0) throw notYours(ref);
    if (ids.length > 1) throw new OpError('bad_request', `${ref} names ${ids.length} snapshots (${ids.slice(0, 5).join(', ')}); give more digits`);
    return { row: found[0], shared: found[0].shared };
  }

  private async visible(user: User, id: string): Promise<Visible | undefined> {
    if (!isSnapshotId(id)) return undefined;
    const found = await this.snapshots.findVisible(user.name, id, Date.now());
    return found.length === 0 ? undefined : { row: found[0], shared: found[0].shared };
  }

  private async redeem(user: User, link: string): Promise<Visible> {
    const share = await this.snapshots.redeemLink(user.name, link, Date.now());
    const row = share === undefined ? undefined : await this.snapshots.getSnapshot(share.owner, share.snapshot);
    if (row === undefined) throw new OpError('forbidden', 'this link is unknown, expired or revoked');
    return { row, shared: row.owner !== user.name };
  }

  private async log(user: User, start: Visible, limit: unknown): Promise<Json[]> {
    const max = typeof limit === 'number' && limit > 0 ? Math.min(limit, LOG_LIMIT) : LOG_LIMIT;
    const out: Json[] = [];
    const seen = new Set<string>();
    const queue: Visible[] = [start];
    while (queue.length > 0 && out.length < max) {
      const v = queue.shift() as Visible;
      if (seen.has(v.row.id)) continue;
      seen.add(v.row.id);
      out.push(await this.describe(v));
      for (const p of (JSON.parse(v.row.record) as SnapshotRecord).parents) {
        const pv = await this.visible(user, p);
        if (pv !== undefined) queue.push(pv);
      }
    }
    return out;
  }

  private async describe(v: Visible): Promise<Json> {
    const record = JSON.parse(v.row.record) as SnapshotRecord;
    // Whether this gateway vouches that the signing key is the author's: saved here (not imported) with the key
    // the author has registered.
    const author = v.row.imported ? undefined : await this.snapshots.getUser(record.author);
    return {
      id: v.row.id,
      owner: v.row.owner,
      author: record.author,
      key: record.key,
      key_vouched: author?.publicKey === record.key,
      imported: v.row.imported,
      shared: v.shared,
      manifest: record.manifest,
      parents: record.parents,
      created: record.created,
      message: record.message,
      notebook: record.notebook,
      cells: record.cells.length,
      size_bytes: v.row.sizeBytes,
    };
  }
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string' || v === '') throw new OpError('bad_request', `"${field}" must be a non-empty string`);
  return v;
}

function refName(v: unknown): string {
  const name = str(v, 'name');
  if (!NAME.test(name)) throw new OpError('bad_request', `ref name ${JSON.stringify(name)}: use 1-128 letters, digits and . _ @ / -`);
  return name;
}

function userName(v: unknown): string {
  const name = str(v, 'user name');
  if (!USER.test(name)) {
    throw new OpError('bad_request', `user name ${JSON.stringify(name)}: 1-32 lowercase letters, digits, _ . -, starting with a letter`);
  }
  return name;
}

function quotaBytes(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new OpError('bad_request', 'quota_bytes must be a whole number of bytes (0 = no limit)');
  }
  return v;
}

function admin(user: User, op: string): void {
  if (!user.admin) throw new OpError('forbidden', `${op} is for admins`);
}

/** The one answer for what does not exist and what is not the caller's: existence is not revealed. */
function notYours(ref: string): OpError {
  return new OpError('forbidden', `snapshot ${JSON.stringify(ref)}: not found or not yours`);
}
