import assert from 'node:assert/strict';
import { KeyObject, generateKeyPairSync, sign } from 'node:crypto';
import { after, before, test } from 'node:test';
import { encodeCanonical } from '@kernelhop/kernel-snapshot';
import * as grpc from '@grpc/grpc-js';
import { WebSocket } from 'ws';
import { TestClient, TestGateway, blob, grpcClients, meta, onDisk, snapshotOf, startTestGateway, unary } from './helpers.js';

let t: TestGateway;
let admin: TestClient;
const users: Record<string, { token: string; c: TestClient; key: KeyObject; pub: string }> = {};

async function addUser(name: string, quota = 0): Promise<void> {
  const r = await admin.call({ op: 'user_add', name, quota_bytes: quota });
  assert.equal(r.ok, true, JSON.stringify(r));
  const token = r.token as string;
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const pub = Buffer.from(publicKey.export({ format: 'jwk' }).x as string, 'base64url').toString('base64');
  const c = await TestClient.connect(t.gw.wsUrl, token);
  assert.equal((await c.call({ op: 'key_register', public_key: pub })).ok, true);
  users[name] = { token, c, key: privateKey, pub };
}

function record(user: string, manifest: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    kind: 'kernelhop.snapshot-record',
    version: 1,
    manifest,
    author: user,
    key: users[user].pub,
    parents: [],
    created: new Date().toISOString(),
    message: 'm',
    notebook: 'analysis.ipynb',
    cells: ['x = 1'],
    environment: { python: '3.11.7', packages: { numpy: '1.26.4' } },
    ...extra,
  };
}

function signed(user: string, rec: Record<string, unknown>): { record: Record<string, unknown>; signature: string } {
  return { record: rec, signature: sign(null, encodeCanonical(rec), users[user].key).toString('base64') };
}

/** Uploads a fresh one-chunk snapshot as `user` and saves it; returns the snapshot id and its blobs. */
async function saved(user: string, text: string, extra: Record<string, unknown> = {}, name?: string) {
  const chunk = blob(text);
  const snap = snapshotOf([chunk]);
  const c = users[user].c;
  assert.equal((await c.putBlobs([chunk, snap])).ok, true);
  const r = await c.call({ op: 'snapshot_save', ...signed(user, record(user, snap.digest, extra)), name });
  assert.equal(r.ok, true, JSON.stringify(r));
  return { id: r.snapshot as string, chunk, snap };
}

function code(r: Record<string, unknown>): string {
  return (r.error as { code: string } | undefined)?.code ?? 'ok';
}

async function getBlob(c: TestClient, digest: string): Promise<string> {
  const r = await c.call({ op: 'get_blobs', digests: [digest] });
  const entry = (r.blobs as Array<Record<string, unknown>>)[0];
  return 'offset' in entry ? 'found' : String(entry.code);
}

before(async () => {
  t = await startTestGateway();
  admin = await TestClient.connect(t.gw.wsUrl);
  for (const name of ['alice', 'bob', 'carol']) await addUser(name);
});
after(async () => {
  admin.close();
  for (const u of Object.values(users)) u.c.close();
  await t.stop();
});

test('users: the gateway token is the admin; user_add gives a token; only admins manage users', async () => {
  assert.deepEqual(
    { ...(await admin.call({ op: 'whoami' })), re: 0 },
    { re: 0, ok: true, user: 'admin', admin: true, public_key: null, used_bytes: 0, quota_bytes: 0 },
  );
  const who = await users.alice.c.call({ op: 'whoami' });
  assert.equal(who.user, 'alice');
  assert.equal(who.admin, false);
  assert.equal(code(await users.alice.c.call({ op: 'user_add', name: 'mallory' })), 'forbidden');
  assert.equal(code(await admin.call({ op: 'user_add', name: 'alice' })), 'exists');
  const rotated = await admin.call({ op: 'user_add', name: 'dave' });
  const again = await admin.call({ op: 'user_token', name: 'dave' });
  const status = (token: string): Promise<number> =>
    new Promise((resolve) => {
      const ws = new WebSocket(t.gw.wsUrl, { headers: { Authorization: `Bearer ${token}` } });
      ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => {
        resolve(101);
        ws.close();
      });
      ws.on('error', () => undefined);
    });
  assert.equal(await status(rotated.token as string), 401);
  assert.equal(await status(again.token as string), 101);
  assert.equal((await admin.call({ op: 'user_rm', name: 'dave' })).ok, true);
  assert.equal(await status(again.token as string), 401);
  const list = await admin.call({ op: 'user_list' });
  assert.deepEqual(
    (list.users as Array<{ name: string }>).map((u) => u.name),
    ['admin', 'alice', 'bob', 'carol'],
  );
});

test("a user's token is refused on gRPC: the runtimes' API cannot read around the per-user scope", async () => {
  const clients = grpcClients(t.grpcAddress);
  try {
    await assert.rejects(unary(clients.cas, 'BatchReadBlobs', { digests: [] }, meta(users.alice.token)), {
      code: grpc.status.PERMISSION_DENIED,
      details: /user alice's token is refused on gRPC; runtimes need a runtime token/,
    });
  } finally {
    clients.cas.close();
    clients.runtimes.close();
  }
});

test('per-user dedup: a blob another user stored is missing for you until you upload its bytes', async () => {
  const secret = blob('alice private bytes 0001');
  assert.equal((await users.alice.c.putBlobs([secret])).ok, true);
  const missing = await users.bob.c.call({ op: 'find_missing', digests: [secret.digest] });
  assert.deepEqual(missing.missing, [secret.digest]);
  assert.equal(await getBlob(users.bob.c, secret.digest), 'not_found');
  // Proving the bytes gives bob the blob (stored once on disk all the same).
  const put = await users.bob.c.putBlobs([secret]);
  assert.equal((put.results as Array<{ code: string }>)[0].code, 'ok');
  assert.deepEqual((await users.bob.c.call({ op: 'find_missing', digests: [secret.digest] })).missing, []);
  assert.equal(await getBlob(users.bob.c, secret.digest), 'found');
});

test('save checks author, key, signature and completeness; others are refused without learning it exists', async () => {
  const chunk = blob('state of alice 1');
  const snap = snapshotOf([chunk]);
  await users.alice.c.putBlobs([snap]);
  const incomplete = await users.alice.c.call({ op: 'snapshot_save', ...signed('alice', record('alice', snap.digest)) });
  assert.equal(code(incomplete), 'missing_blobs');
  await users.alice.c.putBlobs([chunk]);
  const asBob = await users.alice.c.call({ op: 'snapshot_save', ...signed('alice', record('alice', snap.digest, { author: 'bob' })) });
  assert.equal(code(asBob), 'forbidden');
  const forged = signed('alice', record('alice', snap.digest));
  (forged.record as { message: string }).message = 'changed after signing';
  assert.equal(code(await users.alice.c.call({ op: 'snapshot_save', ...forged })), 'bad_signature');
  const ok = await users.alice.c.call({ op: 'snapshot_save', ...signed('alice', record('alice', snap.digest)), name: 'main' });
  assert.equal(ok.ok, true);
  const id = ok.snapshot as string;
  assert.match(id, /^[0-9a-f]{64}$/);

  const mine = await users.alice.c.call({ op: 'snapshot_get', ref: 'main' });
  assert.equal((mine.snapshot as { id: string }).id, id);
  assert.equal((mine.snapshot as { key_vouched: boolean }).key_vouched, true);
  const theirs = await users.bob.c.call({ op: 'snapshot_get', ref: id });
  const nothing = await users.bob.c.call({ op: 'snapshot_get', ref: 'f'.repeat(64) });
  assert.equal(code(theirs), 'forbidden');
  assert.equal(code(nothing), 'forbidden');
  assert.match((theirs.error as { message: string }).message, /not found or not yours/);
  assert.equal(code(await users.bob.c.call({ op: 'snapshot_share', ref: id, with: 'bob' })), 'forbidden');
  assert.equal(code(await users.bob.c.call({ op: 'snapshot_rm', ref: id })), 'forbidden');
  // Bob cannot run alice's state either: for him its blobs do not exist.
  const run = await users.bob.c.call({ op: 'run', session: 's', gpu_class: 'h100', code: '', snapshot: snap.digest });
  assert.equal(code(run), 'missing_blobs');
});

test('share with a user: read, fetch chunks, revoke; a third user is refused throughout', async () => {
  const { id, chunk } = await saved('alice', 'shared state 1');
  const share = await users.alice.c.call({ op: 'snapshot_share', ref: id, with: 'bob' });
  assert.equal(share.ok, true);
  const got = await users.bob.c.call({ op: 'snapshot_get', ref: id.slice(0, 12) });
  assert.equal((got.snapshot as { author: string; shared: boolean }).author, 'alice');
  assert.equal((got.snapshot as { shared: boolean }).shared, true);
  assert.equal(await getBlob(users.bob.c, chunk.digest), 'found');
  assert.equal((await users.bob.c.call({ op: 'snapshot_list' })).shared instanceof Array, true);
  assert.equal(code(await users.carol.c.call({ op: 'snapshot_get', ref: id })), 'forbidden');
  assert.equal(await getBlob(users.carol.c, chunk.digest), 'not_found');
  assert.equal(code(await users.bob.c.call({ op: 'snapshot_revoke', share: share.share })), 'forbidden');
  assert.equal((await users.alice.c.call({ op: 'snapshot_revoke', share: share.share })).ok, true);
  assert.equal(code(await users.bob.c.call({ op: 'snapshot_get', ref: id })), 'forbidden');
  assert.equal(await getBlob(users.bob.c, chunk.digest), 'not_found');
});

test('a link is read-only, expires and can be revoked', async () => {
  const { id, chunk } = await saved('alice', 'linked state 1');
  const link = await users.alice.c.call({ op: 'snapshot_share', ref: id, link: true, expires_s: 0.4 });
  assert.match(link.link as string, /^khl_/);
  const got = await users.carol.c.call({ op: 'snapshot_get', link: link.link });
  assert.equal((got.snapshot as { id: string }).id, id);
  assert.equal(await getBlob(users.carol.c, chunk.digest), 'found');
  // Read-only: the grantee can neither share nor delete it.
  assert.equal(code(await users.carol.c.call({ op: 'snapshot_share', ref: id, link: true })), 'forbidden');
  assert.equal(code(await users.carol.c.call({ op: 'snapshot_rm', ref: id })), 'forbidden');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(code(await users.carol.c.call({ op: 'snapshot_get', ref: id })), 'forbidden');
  assert.equal(code(await users.bob.c.call({ op: 'snapshot_get', link: link.link })), 'forbidden');
  assert.equal(await getBlob(users.carol.c, chunk.digest), 'not_found');

  const second = await users.alice.c.call({ op: 'snapshot_share', ref: id, link: true });
  assert.equal((await users.bob.c.call({ op: 'snapshot_get', ref: second.link })).ok, true);
  await users.alice.c.call({ op: 'snapshot_revoke', share: second.share });
  assert.equal(code(await users.bob.c.call({ op: 'snapshot_get', ref: id })), 'forbidden');
});

test('fork is a new signed record over the same manifest; log follows parents', async () => {
  const first = await saved('alice', 'history 1', {}, 'hist');
  const fork = await users.alice.c.call({
    op: 'snapshot_save',
    ...signed('alice', record('alice', first.snap.digest, { parents: [first.id], message: 'fork', cells: [] })),
    name: 'hist-fork',
  });
  assert.equal(fork.ok, true);
  assert.notEqual(fork.snapshot, first.id);
  const log = await users.alice.c.call({ op: 'snapshot_log', ref: 'hist-fork' });
  assert.deepEqual(
    (log.log as Array<{ id: string }>).map((e) => e.id),
    [fork.snapshot, first.id],
  );
  // A parent the author cannot read is refused (no history borrowed from others' private snapshots).
  const foreign = await saved('bob', 'bob state 9');
  const bad = await users.alice.c.call({
    op: 'snapshot_save',
    ...signed('alice', record('alice', first.snap.digest, { parents: [foreign.id] })),
  });
  assert.equal(code(bad), 'forbidden');
});

test("a grantee's fork keeps the state after the share is revoked; the fork is the grantee's", async () => {
  const src = await saved('alice', 'to be forked by bob');
  const share = await users.alice.c.call({ op: 'snapshot_share', ref: src.id, with: 'bob' });
  const fork = await users.bob.c.call({
    op: 'snapshot_save',
    ...signed('bob', record('bob', src.snap.digest, { parents: [src.id], message: 'fork', cells: [] })),
    name: 'bobs-fork',
  });
  assert.equal(fork.ok, true, JSON.stringify(fork));
  await users.alice.c.call({ op: 'snapshot_revoke', share: share.share });
  assert.equal(code(await users.bob.c.call({ op: 'snapshot_get', ref: src.id })), 'forbidden');
  const mine = await users.bob.c.call({ op: 'snapshot_get', ref: 'bobs-fork' });
  assert.equal((mine.snapshot as { owner: string }).owner, 'bob');
  assert.equal(await getBlob(users.bob.c, src.chunk.digest), 'found');
  // The log shows only what bob may read: his fork, not alice's revoked parent.
  const log = await users.bob.c.call({ op: 'snapshot_log', ref: 'bobs-fork' });
  assert.deepEqual((log.log as Array<{ id: string }>).map((e) => e.id), [fork.snapshot]);
});

test('quota: uploads past it are refused with a clear error; rm gives the room back', async () => {
  await addUser('erin', 1000);
  const first = await saved('erin', 'a'.repeat(200));
  const used = (await users.erin.c.call({ op: 'whoami' })).used_bytes as number;
  assert.equal(used, first.chunk.data.length + first.snap.data.length);
  const b = blob('b'.repeat(900));
  const refused = (await users.erin.c.putBlobs([b])).results as Array<{ code: string; message: string }>;
  assert.equal(refused[0].code, 'quota_exceeded');
  assert.match(refused[0].message, new RegExp(`quota exceeded: ${used} of 1000 bytes used.*kernelhop snapshot rm`));
  // Saving over content shared with you counts too.
  const big = await saved('alice', 'z'.repeat(2000));
  await users.alice.c.call({ op: 'snapshot_share', ref: big.id, with: 'erin' });
  const over = await users.erin.c.call({ op: 'snapshot_save', ...signed('erin', record('erin', big.snap.digest, { parents: [big.id] })) });
  assert.equal(code(over), 'quota_exceeded');
  assert.equal((await users.erin.c.call({ op: 'snapshot_rm', ref: first.id })).ok, true);
  assert.equal((await users.erin.c.call({ op: 'whoami' })).used_bytes, 0);
  assert.equal(((await users.erin.c.putBlobs([b])).results as Array<{ code: string }>)[0].code, 'ok');
});

test('quota: one frame is checked item by item; only verified blobs that fit are held', async () => {
  await addUser('fay', 1000);
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((ch, i) => blob(ch.repeat(i === 3 ? 100 : 400)));
  const forged = { digest: blob('e'.repeat(50)).digest, data: Buffer.from('f'.repeat(50)) };
  const results = (await users.fay.c.putBlobs([a, b, c, forged, d, a])).results as Array<{ code: string }>;
  assert.deepEqual(
    results.map((r) => r.code),
    ['ok', 'ok', 'quota_exceeded', 'digest_mismatch', 'ok', 'ok'],
  );
  assert.equal((await users.fay.c.call({ op: 'whoami' })).used_bytes, 900);
  const missing = await users.fay.c.call({ op: 'find_missing', digests: [a, b, c, forged, d].map((x) => x.digest) });
  assert.deepEqual(missing.missing, [c.digest, forged.digest]);
});

test('quota: an admin raises, lowers or lifts it; what a user holds stays; only admins may', async () => {
  await addUser('gus', 500);
  const x = blob('x'.repeat(400));
  const y = blob('y'.repeat(400));
  assert.equal(((await users.gus.c.putBlobs([x, y])).results as Array<{ code: string }>)[1].code, 'quota_exceeded');
  const raised = await admin.call({ op: 'user_quota', name: 'gus', quota_bytes: 1000 });
  assert.equal(raised.ok, true, JSON.stringify(raised));
  assert.deepEqual([raised.user, raised.quota_bytes, raised.used_bytes], ['gus', 1000, 400]);
  assert.equal(((await users.gus.c.putBlobs([y])).results as Array<{ code: string }>)[0].code, 'ok');
  // Lowered below what is held: nothing is taken away, new uploads are refused.
  assert.equal((await admin.call({ op: 'user_quota', name: 'gus', quota_bytes: 100 })).used_bytes, 800);
  assert.equal(((await users.gus.c.putBlobs([blob('z')])).results as Array<{ code: string }>)[0].code, 'quota_exceeded');
  assert.equal((await admin.call({ op: 'user_quota', name: 'gus', quota_bytes: 0 })).quota_bytes, 0);
  assert.equal(((await users.gus.c.putBlobs([blob('z')])).results as Array<{ code: string }>)[0].code, 'ok');
  assert.equal(code(await users.gus.c.call({ op: 'user_quota', name: 'gus', quota_bytes: 0 })), 'forbidden');
  assert.equal(code(await admin.call({ op: 'user_quota', name: 'nobody', quota_bytes: 1 })), 'not_found');
  assert.equal(code(await admin.call({ op: 'user_quota', name: 'gus', quota_bytes: -1 })), 'bad_request');
  assert.equal(code(await admin.call({ op: 'user_quota', name: 'gus' })), 'bad_request');
});

test('gc removes what nothing names, keeps every snapshot, and concurrent saves never name a missing blob', async () => {
  const orphan = blob('orphan bytes nobody saved');
  await users.carol.c.putBlobs([orphan]);
  const kept = await saved('carol', 'kept by a snapshot');
  const stored = (d: string): Promise<boolean> => onDisk(t.dataDir, d);
  // Within the grace nothing goes.
  await admin.call({ op: 'gc', grace_s: 60 });
  assert.ok(await stored(orphan.digest));
  const report = await admin.call({ op: 'gc', grace_s: 0 });
  assert.equal(report.ok, true, JSON.stringify(report));
  assert.ok(!(await stored(orphan.digest)));
  assert.ok((await stored(kept.chunk.digest)) && (await stored(kept.snap.digest)));
  assert.equal(code(await users.carol.c.call({ op: 'gc' })), 'forbidden');

  // Saves racing gc (grace 0, the harshest): a save either fails (and names nothing) or all its blobs stay.
  const ids: string[] = [];
  let failures = 0;
  const writers = Array.from({ length: 20 }, async (_, i) => {
    const chunk = blob(`concurrent ${i}`);
    const snap = snapshotOf([chunk]);
    await users.carol.c.putBlobs([chunk]);
    await users.carol.c.putBlobs([snap]);
    const r = await users.carol.c.call({ op: 'snapshot_save', ...signed('carol', record('carol', snap.digest)) });
    if (r.ok === true) ids.push(r.snapshot as string);
    else {
      assert.equal(code(r), 'missing_blobs');
      failures += 1;
    }
  });
  const collectors = Array.from({ length: 5 }, () => admin.call({ op: 'gc', grace_s: 0 }));
  await Promise.all([...writers, ...collectors]);
  await admin.call({ op: 'gc', grace_s: 0 });
  assert.equal(ids.length + failures, 20);
  for (const id of ids) {
    const got = await users.carol.c.call({ op: 'snapshot_get', ref: id });
    const manifest = (got.snapshot as { manifest: string }).manifest;
    assert.ok(await stored(manifest), `manifest of ${id} kept`);
  }
  // With a realistic grace every concurrent save succeeds.
  const more = Array.from({ length: 10 }, (_, i) => saved('carol', `graceful ${i}`));
  const gcs = Array.from({ length: 3 }, () => admin.call({ op: 'gc', grace_s: 60 }));
  const done = await Promise.all(more);
  await Promise.all(gcs);
  for (const s of done) assert.ok(await stored(s.chunk.digest));
});
