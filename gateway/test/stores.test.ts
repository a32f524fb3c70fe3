// The blob store suite runs on both stores: the directory under --data and an S3-compatible bucket (moto's server,
// started here). What only one of them has (file layout, multipart, conditional writes, retries) follows each.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Digest, digestOf, formatDigest, parseDigest } from '@kernelhop/kernel-snapshot';
import { fileURLToPath } from 'node:url';
import { DiskBlobStore, SweepableBlobStore } from '../src/blobStore.js';
import { SqliteSnapshotStore } from '../src/snapshotStore.js';
import { checkSnapshot } from '../src/snapshotCheck.js';
import { readPackIndex } from '../src/stores/packs.js';
import { S3BlobStore } from '../src/stores/s3BlobStore.js';
import { blob, snapshotOf } from './helpers.js';
import { S3TestServer, startS3Server } from './s3Server.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kernelhop-stores-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** What the suite needs of a store beyond its interface: a fresh one, and a look behind its back. */
interface Backend {
  name: string;
  open(): Promise<SweepableBlobStore>;
  /** Every blob stored for `store` (once per copy), temporaries and unfinished uploads included. */
  entries(store: SweepableBlobStore): Promise<string[]>;
  /** Cuts what is stored for `d` one byte short, as a torn write or a damaged disk would. */
  truncate(store: SweepableBlobStore, d: Digest): Promise<void>;
  exists(store: SweepableBlobStore, d: Digest): Promise<boolean>;
}

let diskN = 0;
const rootOf = (store: SweepableBlobStore): string =>
  path.dirname(path.dirname((store as DiskBlobStore).pathOf({ hash: '00'.repeat(32), sizeBytes: 0 })));
/** What the disk holds, read behind the store's back: a pack's blobs by its trailer, any other file by its name. */
async function diskEntries(store: SweepableBlobStore): Promise<string[]> {
  const files = readdirSync(rootOf(store), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  const names = await Promise.all(
    files.map(async (e) =>
      e.name.endsWith('.pack') ? (await readPackIndex(path.join(e.parentPath, e.name))).entries.map((x) => x.hash) : [e.name],
    ),
  );
  return names.flat();
}
const disk: Backend = {
  name: 'disk',
  open: () => DiskBlobStore.open(path.join(dir, `cas${diskN++}`)),
  entries: diskEntries,
  truncate: async (store, d) => {
    const { url, offset } = await (store as DiskBlobStore).readUrl(d);
    truncateSync(fileURLToPath(url), offset + d.sizeBytes - 1);
  },
  exists: async (store, d) => (await diskEntries(store)).includes(d.hash),
};

const BUCKET = 'kernelhop-test';
let s3: S3TestServer;
/** The tests' own client, straight to moto: what they look at is not what the store under test says. */
let raw: S3Client;
let s3N = 0;
const prefixes = new WeakMap<SweepableBlobStore, string>();
const s3Backend: Backend = {
  name: 's3',
  open: async () => {
    const prefix = `suite/t${s3N++}`;
    const store = await S3BlobStore.open({ location: { bucket: BUCKET, prefix }, endpoint: s3.endpoint });
    prefixes.set(store, prefix);
    after(() => store.close());
    return store;
  },
  entries: async (store) => {
    const prefix = `${prefixes.get(store)}/`;
    const objects = await raw.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
    const uploads = await raw.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: prefix }));
    return [
      ...(objects.Contents ?? []).map((o) => (o.Key ?? '').slice(prefix.length)),
      ...(uploads.Uploads ?? []).map((u) => `upload:${u.Key}`),
    ];
  },
  truncate: async (store, d) => {
    const key = (store as S3BlobStore).keyOf(d);
    const got = await raw.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    const bytes = Buffer.from(await got.Body!.transformToByteArray());
    await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bytes.subarray(0, bytes.length - 1) }));
  },
  exists: async (store, d) =>
    raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: (store as S3BlobStore).keyOf(d) })).then(
      () => true,
      () => false,
    ),
};

before(async () => {
  s3 = await startS3Server();
  await s3.createBucket(BUCKET);
  raw = new S3Client({ endpoint: s3.motoEndpoint, forcePathStyle: true, region: 'us-east-1' });
});
after(async () => {
  raw?.destroy();
  await s3?.stop();
});

for (const backend of [disk, s3Backend]) {
  describe(`blob store on ${backend.name}`, () => {
    test('stores verified blobs, finds what is missing, and a second put of one blob is fine', async () => {
      const store = await backend.open();
      const b = blob('hello');
      const d = parseDigest(b.digest);
      assert.deepEqual(await store.findMissing([d, d]), [d]);
      assert.equal((await store.put(d, b.data)).code, 'ok');
      assert.deepEqual(await store.get(d), b.data);
      assert.equal(await store.has(d), true);
      assert.deepEqual(await store.findMissing([d]), []);
      assert.equal((await store.put(d, b.data)).code, 'ok', 'a second put of the same blob is fine');
      assert.deepEqual(await backend.entries(store), backend.name === 'disk' ? [d.hash] : [`cas/${d.hash}`], 'stored once');
    });

    test('refuses bytes that do not match the digest and stores nothing', async () => {
      const store = await backend.open();
      const d = parseDigest(blob('hello').digest);
      const wrongBytes = await store.put(d, Buffer.from('jello'));
      assert.equal(wrongBytes.code, 'digest_mismatch');
      assert.match(wrongBytes.message, /hashes to .* not /);
      const wrongSize = await store.put(d, Buffer.from('hello!'));
      assert.equal(wrongSize.code, 'digest_mismatch');
      assert.match(wrongSize.message, /6 bytes but its digest says 5/);
      assert.equal(await store.has(d), false);
      assert.equal(await store.get(d), undefined);
      assert.deepEqual(await backend.entries(store), []);
    });

    test('concurrent puts of one blob leave one complete blob and no temporaries', async () => {
      const store = await backend.open();
      const data = Buffer.alloc(1 << 20, 7);
      const d = digestOf(data);
      const results = await Promise.all(Array.from({ length: 16 }, () => store.put(d, data)));
      assert.ok(results.every((r) => r.code === 'ok'));
      assert.equal((await backend.entries(store)).length, 1);
      assert.ok((await store.get(d))?.equals(data));
    });

    test('get gives a blob only when what is stored holds exactly the bytes its size says', async () => {
      const store = await backend.open();
      const empty = blob('');
      const b = blob('some bytes of a chunk');
      for (const x of [empty, b]) await store.put(parseDigest(x.digest), x.data);
      assert.deepEqual(await store.get(parseDigest(empty.digest)), Buffer.alloc(0));
      const d = parseDigest(b.digest);
      assert.deepEqual(await store.get(d), b.data);
      await backend.truncate(store, d);
      assert.equal(await store.get(d), undefined, 'a truncated blob');
    });

    test('a blob known to be present is not remembered across its removal, however the two overlap', async () => {
      const store = await backend.open();
      const b = blob('removed by gc');
      const d = parseDigest(b.digest);
      const later = Date.now() + 60_000;
      for (let round = 0; round < 20; round++) {
        assert.equal((await store.put(d, b.data)).code, 'ok');
        assert.equal(await store.has(d), true); // remembered from here on
        // A check that starts before, during or after the removal's own look and delete, as they interleave:
        // none may leave the blob remembered once it is gone.
        const checks = [store.has(d), store.removeIfOlder(d, later).then(() => store.has(d)), store.has(d)];
        await Promise.all(checks);
        assert.equal(await backend.exists(store, d), false);
        assert.equal(await store.has(d), false, `round ${round}`);
        assert.deepEqual(await store.findMissing([d]), [d]);
      }
    });

    test('gc lists every blob with its size and time, and removes only what is older than the cutoff', async () => {
      const store = await backend.open();
      const blobs = ['one', 'two', 'three'].map(blob);
      const before = Date.now() - 1000;
      for (const b of blobs) await store.put(parseDigest(b.digest), b.data);
      const listed = [];
      for await (const e of store.list()) listed.push(e);
      assert.deepEqual(listed.map((e) => formatDigest(e.digest)).sort(), blobs.map((b) => b.digest).sort());
      assert.ok(listed.every((e) => e.mtimeMs >= before - 1000 && e.mtimeMs <= Date.now() + 1000), 'times are the writes\'');
      const [first, second] = blobs.map((b) => parseDigest(b.digest));
      assert.equal(await store.removeIfOlder(first!, before), false, 'written after the cutoff: kept');
      assert.equal(await store.removeIfOlder(first!, Date.now() + 60_000), true);
      assert.equal(await store.removeIfOlder(first!, Date.now() + 60_000), false, 'gone already');
      assert.equal(await store.has(first!), false);
      assert.equal(await store.has(second!), true);
      assert.equal(await store.removeStaleTemporaries(Date.now() + 60_000), 0);
    });

    test('a snapshot checked before is still looked for in each store it is checked in', async () => {
      const store = await backend.open();
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
      assert.deepEqual(await checkSnapshot(await backend.open(), manifest), missingManifest);
      await store.removeIfOlder(parseDigest(chunk.digest), Date.now() + 60_000);
      const check = await checkSnapshot(store, manifest);
      assert.equal(check.ok, false);
      assert.match((check as { message: string }).message, /names 1 chunk\(s\) not in the store/);
      await store.removeIfOlder(manifest, Date.now() + 60_000);
      assert.deepEqual(await checkSnapshot(store, manifest), missingManifest);
    });
  });
}

describe('disk store packs', () => {
  const batch = (...texts: string[]) => texts.map(blob).map((b) => ({ digest: parseDigest(b.digest), data: b.data }));
  const packsOf = (root: string) => readdirSync(path.join(root, 'packs')).filter((n) => n.endsWith('.pack'));

  test('a batch is one pack at <root>/packs/<id>.pack, found again by a store opened later', async () => {
    const root = path.join(dir, 'cas-pack');
    const store = await DiskBlobStore.open(root);
    const items = batch('one', 'two', 'three');
    assert.deepEqual((await store.putMany(items)).map((r) => r.code), ['ok', 'ok', 'ok']);
    assert.equal(packsOf(root).length, 1);
    const pack = readFileSync(path.join(root, 'packs', packsOf(root)[0]!));
    for (const it of items) {
      const { url, offset } = await store.readUrl(it.digest);
      assert.equal(fileURLToPath(url), path.join(root, 'packs', packsOf(root)[0]!));
      assert.deepEqual(pack.subarray(offset, offset + it.data.length), it.data, 'a runtime reads the blob at its offset');
    }
    const reopened = await DiskBlobStore.open(root);
    assert.deepEqual(await reopened.findMissing(items.map((it) => it.digest)), []);
    for (const it of items) assert.deepEqual(await reopened.get(it.digest), it.data);
  });

  test('a blob stored as its own file (before packs) is still read, listed and removed', async () => {
    const store = await DiskBlobStore.open(path.join(dir, 'cas-loose'));
    const b = blob('written loose');
    const d = parseDigest(b.digest);
    const file = store.pathOf(d);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, b.data);
    assert.equal(await store.has(d), true);
    assert.deepEqual(await store.get(d), b.data);
    assert.deepEqual((await store.readUrl(d)).offset, 0);
    const listed = [];
    for await (const e of store.list()) listed.push(formatDigest(e.digest));
    assert.deepEqual(listed, [b.digest]);
    assert.equal((await store.put(d, b.data)).code, 'ok');
    assert.deepEqual(readdirSync(path.join(dir, 'cas-loose', 'packs')), [], 'a second put of it writes no pack');
    assert.equal(await store.removeIfOlder(d, Date.now() + 60_000), true);
    assert.equal(await store.has(d), false);
  });

  test('gc rewrites a pack a quarter of which nothing needs, and removes one nothing needs at all', async () => {
    const root = path.join(dir, 'cas-compact');
    const store = await DiskBlobStore.open(root);
    const items = batch('aaaa', 'bbbb', 'cccc', 'dddd');
    await store.putMany(items);
    const later = Date.now() + 60_000;
    assert.equal(await store.removeIfOlder(items[0]!.digest, later), true);
    const [first] = packsOf(root);
    await store.compact();
    const [second, ...more] = packsOf(root);
    assert.deepEqual(more, []);
    assert.notEqual(second, first, 'rewritten');
    assert.deepEqual((await readPackIndex(path.join(root, 'packs', second!))).entries.map((e) => e.hash).sort(), items.slice(1).map((it) => it.digest.hash).sort());
    for (const it of items.slice(1)) assert.deepEqual(await store.get(it.digest), it.data);
    assert.equal(await store.get(items[0]!.digest), undefined);
    for (const it of items.slice(1)) assert.equal(await store.removeIfOlder(it.digest, later), true);
    assert.deepEqual(packsOf(root), [], 'a pack with no blob left is removed');
  });

  test('a put of a blob already packed touches its pack, so gc grants it the grace again', async () => {
    const root = path.join(dir, 'cas-touch');
    const store = await DiskBlobStore.open(root);
    const [it] = batch('uploaded twice');
    await store.putMany([it!]);
    const file = path.join(root, 'packs', packsOf(root)[0]!);
    utimesSync(file, new Date(1000), new Date(1000));
    const reopened = await DiskBlobStore.open(root);
    assert.equal(await reopened.removeIfOlder(it!.digest, 500), false, 'younger than the cutoff');
    await reopened.put(it!.digest, it!.data);
    assert.ok((await reopened.readUrl(it!.digest)).url.endsWith(packsOf(root)[0]!), 'not written again');
    assert.equal(await reopened.removeIfOlder(it!.digest, Date.now() - 60_000), false, 'touched by the put');
  });

  test('a damaged pack is left out: its blobs count as missing, and the store says which file', async () => {
    const root = path.join(dir, 'cas-damaged');
    const store = await DiskBlobStore.open(root);
    const items = batch('kept', 'lost');
    await store.putMany(items.slice(0, 1));
    await store.putMany(items.slice(1));
    const damaged = path.join(root, 'packs', path.basename(fileURLToPath((await store.readUrl(items[1]!.digest)).url)));
    const bytes = readFileSync(damaged);
    writeFileSync(damaged, bytes.subarray(0, bytes.length - 3), { mode: 0o644 });
    const said: string[] = [];
    const reopened = await DiskBlobStore.open(root, (line) => said.push(line));
    assert.deepEqual(await reopened.findMissing(items.map((it) => it.digest)), [items[1]!.digest]);
    assert.equal(said.length, 1);
    assert.match(said[0]!, new RegExp(`${damaged} does not end as a pack does; its blobs count as missing`));
  });

  test('a pack cut short by a crash is only a temporary, which gc removes', async () => {
    const root = path.join(dir, 'cas-crash');
    await DiskBlobStore.open(root);
    const tmp = path.join(root, 'packs', `.${'ab'.repeat(16)}.tmp`);
    writeFileSync(tmp, Buffer.alloc(1000, 1));
    const reopened = await DiskBlobStore.open(root);
    assert.equal(await reopened.removeStaleTemporaries(Date.now() - 60_000), 0, 'younger than the cutoff');
    assert.equal(await reopened.removeStaleTemporaries(Date.now() + 60_000), 1);
    assert.deepEqual(readdirSync(path.join(root, 'packs')), []);
  });
});

describe('S3 store', () => {
  test('keeps a blob at PREFIX/cas/<hash>, and refuses to open a bucket that is not there', async () => {
    const store = await S3BlobStore.open({ location: { bucket: BUCKET, prefix: 'layout/p' }, endpoint: s3.endpoint });
    const b = blob('hello');
    await store.put(parseDigest(b.digest), b.data);
    const got = await raw.send(new GetObjectCommand({ Bucket: BUCKET, Key: `layout/p/cas/${parseDigest(b.digest).hash}` }));
    assert.deepEqual(Buffer.from(await got.Body!.transformToByteArray()), b.data);
    store.close();
    await assert.rejects(
      S3BlobStore.open({ location: { bucket: 'no-such-bucket', prefix: '' }, endpoint: s3.endpoint }),
      /s3:\/\/no-such-bucket\/ at http.* did not answer: no such bucket \(create it first\)/,
    );
  });

  test('writes are conditional: the server refuses to replace a blob, and the store takes that as stored', async () => {
    const store = await s3Backend.open();
    const b = blob('written once');
    const d = parseDigest(b.digest);
    await store.put(d, b.data);
    // moto honours If-None-Match: * (as AWS, MinIO do): a second writer of the key is refused.
    await assert.rejects(
      raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: (store as S3BlobStore).keyOf(d), Body: b.data, IfNoneMatch: '*' })),
      (e: unknown) => e instanceof S3ServiceException && e.$metadata.httpStatusCode === 412,
    );
    // Another gateway's write landing between this store's look and its write: the look misses, the write is refused.
    const fresh = await S3BlobStore.open({ location: { bucket: BUCKET, prefix: prefixes.get(store)! }, endpoint: s3.endpoint });
    s3.hideFromHead(d.hash);
    const seen = s3.requests.length;
    try {
      assert.equal((await fresh.put(d, b.data)).code, 'ok');
    } finally {
      s3.hideFromHead(null);
      fresh.close();
    }
    const puts = s3.requests.slice(seen).filter((r) => r.method === 'PUT');
    assert.deepEqual(puts.map((r) => r.status), [412], 'one conditional PUT, refused by the server');
    assert.deepEqual(await store.get(d), b.data);
  });

  test('a large blob goes up in parts (multipart) and comes back whole', async () => {
    const store = await S3BlobStore.open({
      location: { bucket: BUCKET, prefix: 'multipart' },
      endpoint: s3.endpoint,
      multipartThreshold: 6 * 1024 * 1024,
    });
    try {
      const data = Buffer.alloc(12 * 1024 * 1024);
      for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE((i * 2654435761) >>> 0, i);
      const d = digestOf(data);
      const seen = s3.requests.length;
      assert.equal((await store.put(d, data)).code, 'ok');
      const parts = s3.requests.slice(seen).filter((r) => r.method === 'PUT' && /[?&]partNumber=/.test(r.url));
      assert.equal(parts.length, 3, '5 + 5 + 2 MiB');
      const head = await raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: store.keyOf(d) }));
      assert.match(head.ETag ?? '', /-3"$/, 'a multipart ETag');
      assert.ok((await store.get(d))?.equals(data));
      const small = blob('small');
      const before = s3.requests.length;
      await store.put(parseDigest(small.digest), small.data);
      assert.ok(!s3.requests.slice(before).some((r) => /[?&]uploads/.test(r.url)), 'a small blob is one PutObject');
    } finally {
      store.close();
    }
  });

  test('requests the server answers 503 are retried with backoff', async () => {
    const store = await s3Backend.open();
    const b = blob('retried');
    const d = parseDigest(b.digest);
    const seen = s3.requests.length;
    s3.failNext(3);
    assert.equal((await store.put(d, b.data)).code, 'ok');
    s3.failNext(2);
    assert.deepEqual(await store.get(d), b.data);
    assert.equal(s3.requests.slice(seen).filter((r) => r.status === 503).length, 5);
  });

  test('gc aborts multipart uploads a crash left open', async () => {
    const store = await s3Backend.open();
    const key = `${prefixes.get(store)}/cas/${'ab'.repeat(32)}`;
    await raw.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
    // moto reports every upload as initiated in 2010 (a fixed date in its ListMultipartUploads), so that an upload
    // younger than the cutoff is kept cannot be shown against it; AWS and MinIO report the real time.
    assert.deepEqual(await s3Backend.entries(store), [`upload:${key}`]);
    assert.equal(await store.removeStaleTemporaries(Date.now() + 60_000), 1);
    assert.deepEqual(await s3Backend.entries(store), []);
  });

  test('a presigned GET fetches the blob without credentials, and only that blob', async () => {
    const store = (await s3Backend.open()) as S3BlobStore;
    const b = blob('fetched by a runtime');
    const d = parseDigest(b.digest);
    await store.put(d, b.data);
    const { url, offset } = await store.readUrl(d);
    assert.equal(offset, 0, 'an object per blob');
    assert.match(url, /X-Amz-Signature=/);
    assert.match(url, /X-Amz-Expires=300/);
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), b.data);
  });
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
