import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { digestOf, formatDigest, parseDigest } from '@kernelhop/kernel-snapshot';
import { DiskBlobStore } from '../src/blobStore.js';
import { RefError, SqliteMetadataStore } from '../src/metadataStore.js';
import { SqliteSnapshotStore } from '../src/snapshotStore.js';
import { checkSnapshot } from '../src/snapshotCheck.js';
import { blob, snapshotOf } from './helpers.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kernelhop-stores-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('DiskBlobStore stores verified blobs at <root>/<hash[0:2]>/<hash>', async () => {
  const store = await DiskBlobStore.open(path.join(dir, 'cas1'));
  const b = blob('hello');
  const d = parseDigest(b.digest);
  assert.deepEqual(await store.findMissing([d, d]), [d]);
  assert.equal((await store.put(d, b.data)).code, 'ok');
  const file = path.join(dir, 'cas1', d.hash.slice(0, 2), d.hash);
  assert.deepEqual(readFileSync(file), b.data);
  assert.deepEqual(await store.get(d), b.data);
  assert.equal(await store.has(d), true);
  assert.deepEqual(await store.findMissing([d]), []);
  assert.equal((await store.put(d, b.data)).code, 'ok', 'a second put of the same blob is fine');
});

test('DiskBlobStore refuses bytes that do not match the digest and stores nothing', async () => {
  const store = await DiskBlobStore.open(path.join(dir, 'cas2'));
  const d = parseDigest(blob('hello').digest);
  const wrongBytes = await store.put(d, Buffer.from('jello'));
  assert.equal(wrongBytes.code, 'digest_mismatch');
  assert.match(wrongBytes.message, /hashes to .* not /);
  const wrongSize = await store.put(d, Buffer.from('hello!'));
  assert.equal(wrongSize.code, 'digest_mismatch');
  assert.match(wrongSize.message, /6 bytes but its digest says 5/);
  assert.equal(await store.has(d), false);
  assert.equal(await store.get(d), undefined);
  assert.deepEqual(readdirSync(path.join(dir, 'cas2')), []);
});

test('concurrent puts of one blob leave one complete file and no temporaries', async () => {
  const store = await DiskBlobStore.open(path.join(dir, 'cas3'));
  const data = Buffer.alloc(1 << 20, 7);
  const d = digestOf(data);
  const results = await Promise.all(Array.from({ length: 16 }, () => store.put(d, data)));
  assert.ok(results.every((r) => r.code === 'ok'));
  assert.deepEqual(readdirSync(path.join(dir, 'cas3', d.hash.slice(0, 2))), [d.hash]);
  assert.ok((await store.get(d))?.equals(data));
});

test('get gives a blob only when its file holds exactly the bytes its size says', async () => {
  const store = await DiskBlobStore.open(path.join(dir, 'cas8'));
  const empty = blob('');
  const b = blob('some bytes of a chunk');
  for (const x of [empty, b]) await store.put(parseDigest(x.digest), x.data);
  assert.deepEqual(await store.get(parseDigest(empty.digest)), Buffer.alloc(0));
  const d = parseDigest(b.digest);
  assert.deepEqual(await store.get(d), b.data);
  appendFileSync(store.pathOf(d), 'x');
  assert.equal(await store.get(d), undefined, 'a longer file');
  truncateSync(store.pathOf(d), b.data.length - 1);
  assert.equal(await store.get(d), undefined, 'a truncated file');
});

test('a blob known to be present is not remembered across its removal, however the two overlap', async () => {
  const store = await DiskBlobStore.open(path.join(dir, 'cas5'));
  const b = blob('removed by gc');
  const d = parseDigest(b.digest);
  const later = Date.now() + 60_000;
  for (let round = 0; round < 20; round++) {
    assert.equal((await store.put(d, b.data)).code, 'ok');
    assert.equal(await store.has(d), true); // remembered from here on
    // A check that starts before, during or after the removal's own stat and unlink, as they interleave on
    // the thread pool: none may leave the blob remembered once it is gone.
    const checks = [store.has(d), store.removeIfOlder(d, later).then(() => store.has(d)), store.has(d)];
    await Promise.all(checks);
    assert.equal(existsSync(store.pathOf(d)), false);
    assert.equal(await store.has(d), false, `round ${round}`);
    assert.deepEqual(await store.findMissing([d]), [d]);
  }
});

test('a snapshot checked before is still looked for in each store it is checked in', async () => {
  const store = await DiskBlobStore.open(path.join(dir, 'cas6'));
  const chunk = blob('a chunk of some state');
  const snap = snapshotOf([chunk]);
  for (const b of [chunk, snap]) await store.put(parseDigest(b.digest), b.data);
  const manifest = parseDigest(snap.digest);
  assert.equal((await checkSnapshot(store, manifest)).ok, true);
  const missingManifest = {
    ok: false,
    code: 'missing_blobs',
    missing: [manifest],
    message: `snapshot manifest ${snap.digest} is not in the store; upload it (after its chunks) first`,
  };
  assert.deepEqual(await checkSnapshot(await DiskBlobStore.open(path.join(dir, 'cas7')), manifest), missingManifest);
  await store.removeIfOlder(parseDigest(chunk.digest), Date.now() + 60_000);
  const check = await checkSnapshot(store, manifest);
  assert.equal(check.ok, false);
  assert.match((check as { message: string }).message, /names 1 chunk\(s\) not in the store/);
  await store.removeIfOlder(manifest, Date.now() + 60_000);
  assert.deepEqual(await checkSnapshot(store, manifest), missingManifest);
});

test('a ref may only name a snapshot whose blobs are all stored; SQLite file is written', async () => {
  const store = await DiskBlobStore.open(path.join(dir, 'cas4'));
  const dbFile = path.join(dir, 'meta.db');
  const meta = new SqliteMetadataStore(dbFile, store);
  const c1 = blob('chunk one');
  const c2 = blob('chunk two');
  const snap = snapshotOf([c1, c2]);
  const snapDigest = parseDigest(snap.digest);

  await assert.rejects(meta.setRef('main', snapDigest, 'ada'), (e: unknown) => e instanceof RefError && /not in the store/.test(e.message));
  await store.put(snapDigest, snap.data);
  await store.put(parseDigest(c1.digest), c1.data);
  await assert.rejects(
    meta.setRef('main', snapDigest, 'ada'),
    (e: unknown) => e instanceof RefError && e.message.includes(c2.digest) && /1 chunk\(s\) not in the store/.test(e.message),
  );
  assert.equal(await meta.getRef('main'), undefined);
  await store.put(parseDigest(c2.digest), c2.data);
  await meta.setRef('main', snapDigest, 'ada');
  assert.equal((await meta.getRef('main'))?.manifest, snap.digest);

  await meta.runtimeRegistered({ id: 'rt1', name: 'host', classes: [{ name: 'h100', simulated: true }], capacity: 1, version: 't' });
  await meta.runCreated({ id: 'run1', session: 's', gpuClass: 'h100', snapshot: snapDigest });
  await meta.runStarted('run1', 'rt1');
  await meta.runFinished('run1', { status: 'done', outcome: 'ok', resultSnapshot: snap.digest, timingsJson: '{"run_s":1}' });
  const run = await meta.getRun('run1');
  assert.equal(run?.status, 'done');
  assert.equal(run?.runtimeId, 'rt1');
  await meta.close();

  assert.ok(existsSync(dbFile));
  const db = new Database(dbFile, { readonly: true });
  assert.equal((db.pragma('journal_mode', { simple: true }) as string).toLowerCase(), 'wal');
  assert.deepEqual(db.prepare('SELECT name, manifest, owner FROM refs').all(), [{ name: 'main', manifest: snap.digest, owner: 'ada' }]);
  assert.equal((db.prepare('SELECT COUNT(*) AS n FROM runtimes').get() as { n: number }).n, 1);
  assert.equal((db.prepare('SELECT result_snapshot FROM runs').get() as { result_snapshot: string }).result_snapshot, snap.digest);
  db.close();
  assert.equal(formatDigest(snapDigest), snap.digest);
});

test("refreshHolds moves on only this user's holds older than the cutoff, so gc keeps them", async () => {
  const store = new SqliteSnapshotStore(path.join(mkdtempSync(path.join(os.tmpdir(), 'kh-holds-')), 'meta.sqlite'));
  try {
    await store.addUser('ana', 0);
    await store.addUser('ben', 0);
    const [a, b] = ['a'.repeat(64), 'b'.repeat(64)].map((h) => `${h}/10`);
    await store.holdResult('ana', [{ digest: a, size: 10 }, { digest: b, size: 10 }], 1000);
    await store.holdResult('ben', [{ digest: a, size: 10 }], 1000);
    await store.refreshHolds('ana', [a], 2000, 3000); // taken at 1000, before the cutoff: moved to 3000
    await store.refreshHolds('ana', [b], 500, 3000); // taken after the cutoff: left alone
    assert.equal(await store.dropStaleHolds(2500), 2, "ana's b and ben's a are stale, ana's a is not");
    assert.deepEqual([...(await store.visibleDigests('ana', [a, b], 3000))], [a]);
    assert.deepEqual([...(await store.visibleDigests('ben', [a], 3000))], []);
  } finally {
    await store.close();
  }
});

test('a snapshot carrying files is complete only with its tree: directory blobs and file chunks', async () => {
  const fx = JSON.parse(readFileSync(path.join(__dirname, '../../../kernel-snapshot/fixtures/files-tree.json'), 'utf8'));
  const store = await DiskBlobStore.open(path.join(dir, 'cas-files'));
  const manifest = Buffer.from(JSON.stringify(fx.manifest));
  const manifestDigest = digestOf(manifest);
  await store.put(manifestDigest, manifest);
  const dirs = Object.entries(fx.blobs as Record<string, string>).map(([d, b]) => [parseDigest(d), Buffer.from(b, 'base64')] as const);
  for (const [d, b] of dirs.slice(1)) await store.put(d, b);
  const first = await checkSnapshot(store, manifestDigest);
  assert.equal(first.ok, false);
  assert.match((first as { message: string }).message, /names 1 directory blob\(s\) of its file tree not in the store/);
  await store.put(dirs[0]![0], dirs[0]![1]);
  const noChunks = await checkSnapshot(store, manifestDigest);
  assert.match((noChunks as { message: string }).message, /names 2 chunk\(s\) not in the store/);
  // The file chunks are those of the fixture: bytes[i] = (i*7 + seed) % 256.
  for (const [seed, len] of [[5, 70000], [6, 20]] as const) {
    const bytes = Buffer.from(Array.from({ length: len }, (_, i) => (i * 7 + seed) % 256));
    assert.equal((await store.put(digestOf(bytes), bytes)).code, 'ok');
  }
  const check = await checkSnapshot(store, manifestDigest);
  assert.ok(check.ok);
  assert.deepEqual(check.chunks.map(formatDigest).sort(), [...fx.tree_blobs].sort());
});
