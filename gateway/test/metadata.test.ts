// The metadata suite runs on both databases: SQLite under --data and a real PostgreSQL started here.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { parseDigest } from '@kernelhop/kernel-snapshot';
import { DiskBlobStore } from '../src/blobStore.js';
import { MetadataStore, RefError, SqliteMetadataStore } from '../src/metadataStore.js';
import { POSTGRES_MIGRATIONS, SCHEMA_VERSION_TABLE, SQLITE_MIGRATIONS } from '../src/stores/migrations/index.js';
import { PostgresMetadataStore } from '../src/stores/postgresMetadataStore.js';
import { SqliteUserLimits } from '../src/runs/userLimits.js';
import { SqliteSnapshotStore } from '../src/snapshotStore.js';
import { blob, snapshotOf } from './helpers.js';
import { bothDatabases } from './postgresServer.js';

const { dir, postgres } = bothDatabases('kernelhop-meta-');

interface Backend {
  name: string;
  /** A fresh database; `where` says where it is (a file or a URL), to open it again. */
  open(store: DiskBlobStore, where?: string): Promise<{ meta: MetadataStore; where: string }>;
  /** The applied versions, read behind the store's back. */
  versions(where: string): Promise<number[]>;
  /** Runs SQL on the database behind the store's back. */
  exec(where: string, sql: string): Promise<void>;
  /** Reads rows behind the store's back. */
  rows(where: string, sql: string): Promise<Array<Record<string, unknown>>>;
  /** Where a new, empty database is (nothing opened it yet). */
  empty(): Promise<string>;
}

let n = 0;
const sqlite: Backend = {
  name: 'SQLite',
  empty: async () => path.join(dir, `meta${n++}.db`),
  open: async (store, where = path.join(dir, `meta${n++}.db`)) => ({ meta: new SqliteMetadataStore(where, store), where }),
  versions: async (where) => {
    const db = new Database(where, { readonly: true });
    try {
      return db.prepare('SELECT version FROM schema_version ORDER BY version').pluck().all() as number[];
    } finally {
      db.close();
    }
  },
  exec: async (where, sql) => {
    const db = new Database(where);
    db.exec(sql);
    db.close();
  },
  rows: async (where, sql) => {
    const db = new Database(where, { readonly: true });
    try {
      return db.prepare(sql).all() as Array<Record<string, unknown>>;
    } finally {
      db.close();
    }
  },
};

const withClient = async <T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
};
const postgresBackend: Backend = {
  name: 'PostgreSQL',
  empty: () => postgres.newDatabase(),
  open: async (store, where) => {
    const url = where ?? (await postgres.newDatabase());
    return { meta: await PostgresMetadataStore.open(url, store), where: url };
  },
  versions: (url) =>
    withClient(url, async (c) => (await c.query('SELECT version FROM schema_version ORDER BY version')).rows.map((r) => Number(r.version))),
  exec: (url, sql) => withClient(url, async (c) => void (await c.query(sql))),
  rows: (url, sql) => withClient(url, async (c) => (await c.query(sql)).rows as Array<Record<string, unknown>>),
};

const owner = { gatewayId: 'gw-1', user: 'ada', notebook: 'nb.ipynb', cell: 'c1' };

for (const backend of [sqlite, postgresBackend]) {
  describe(`metadata on ${backend.name}`, () => {
    test('a ref may only name a snapshot whose blobs are all stored', async () => {
      const store = await DiskBlobStore.open(path.join(dir, `cas${n++}`));
      const { meta } = await backend.open(store);
      try {
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
        await meta.setRef('main', parseDigest(c1.digest), 'ben').catch(() => undefined); // not a manifest: refused
        assert.equal((await meta.getRef('main'))?.owner, 'ada');
        await assert.rejects(meta.setRef('', snapDigest, 'ada'), /non-empty name/);
      } finally {
        await meta.close();
      }
    });

    test('a run is recorded through its steps, in the order they were asked for', async () => {
      const store = await DiskBlobStore.open(path.join(dir, `cas${n++}`));
      const { meta } = await backend.open(store);
      try {
        const snap = parseDigest(blob('x').digest);
        await meta.runtimeRegistered({ id: 'rt1', name: 'host', classes: [{ name: 'h100', simulated: true }], capacity: 1, version: 't' });
        // As the scheduler does: each step recorded without waiting for the one before.
        const steps = [
          meta.runCreated({ id: 'run1', session: 's', gpuClass: 'h100', snapshot: snap, ...owner }),
          meta.runStarted('run1', 'rt1'),
          meta.runFinished('run1', { status: 'done', outcome: 'ok', resultSnapshot: 'r/1', timingsJson: '{"run_s":1}' }),
          meta.runCreated({ id: 'run2', session: 's', gpuClass: 'h100', snapshot: snap, ...owner }),
          meta.runStarted('run2', 'rt1'),
          meta.runFinished('run2', { status: 'failed', errorCode: 'runtime_lost', errorMessage: 'gone' }),
          meta.runtimeSeen('rt1'),
          meta.runtimeGone('rt1', 'stream ended'),
        ];
        await Promise.all(steps);
        const run = await meta.getRun('run1');
        assert.equal(run?.status, 'done');
        assert.equal(run?.runtimeId, 'rt1');
        assert.equal(run?.outcome, 'ok');
        assert.equal(run?.resultSnapshot, 'r/1');
        assert.equal(run?.snapshot, blob('x').digest);
        assert.equal(typeof run?.createdAt, 'number');
        assert.ok(run!.createdAt <= run!.startedAt! && run!.startedAt! <= run!.finishedAt!);
        const failed = await meta.getRun('run2');
        assert.deepEqual([failed?.status, failed?.errorCode, failed?.errorMessage], ['failed', 'runtime_lost', 'gone']);
        assert.equal(await meta.getRun('nope'), undefined);
      } finally {
        await meta.close();
      }
    });

    test("a lapsed gateway's runs end as gateway_lost at its last beat, each running one counted once, whoever claims", async () => {
      const store = await DiskBlobStore.open(path.join(dir, `cas${n++}`));
      const { meta: a, where } = await backend.open(store);
      const { meta: b } = await backend.open(store, where);
      try {
        const snap = parseDigest(blob('x').digest);
        const now = Date.now();
        const lastBeat = now - 10_000;
        await a.runtimeRegistered({ id: 'rt1', name: 'host-1', classes: [{ name: 'h100', simulated: true }], capacity: 2, version: 't' });
        // The lapsed gateway beat every second, last 10 s ago; the live one now.
        await a.beat({ id: 'gw-dead', addr: 'wss://dead/ws/v1', intervalMs: 1000 }, lastBeat);
        await a.beat({ id: 'gw-live', addr: 'wss://live/ws/v1', intervalMs: 1000 }, now);
        const dead = { gatewayId: 'gw-dead', user: 'ada', notebook: 'nb.ipynb', cell: 'c1' };
        await a.runCreated({ id: 'running', session: 's1', gpuClass: 'h100', snapshot: snap, ...dead });
        await a.runStarted('running', 'rt1');
        await a.runCreated({ id: 'queued', session: 's2', gpuClass: 'h100', snapshot: snap, ...dead });
        await a.runCreated({ id: 'done', session: 's3', gpuClass: 'h100', snapshot: snap, ...dead });
        await a.runFinished('done', { status: 'done', outcome: 'ok', resultSnapshot: 'r/1', timingsJson: '{}' });
        await a.runCreated({ id: 'live', session: 's4', gpuClass: 'h100', snapshot: snap, ...dead, gatewayId: 'gw-live', user: 'bob' });
        await a.runStarted('live', 'rt1');
        await a.getRun('live'); // its writes are in
        await backend.exec(where, `UPDATE runs SET started_at = ${lastBeat - 4000}, created_at = ${lastBeat - 5000} WHERE id = 'running'`);

        const [byA, byB] = await Promise.all([a.claimLapsed(now), b.claimLapsed(now)]);
        const claimed = [...byA, ...byB].sort((x, y) => x.runId.localeCompare(y.runId));
        assert.deepEqual(claimed, [
          { runId: 'queued', gatewayAddr: 'wss://dead/ws/v1', user: 'ada', counted: false },
          { runId: 'running', gatewayAddr: 'wss://dead/ws/v1', user: 'ada', counted: true },
        ]);
        const running = await a.getRun('running');
        assert.deepEqual([running?.status, running?.errorCode, running?.finishedAt], ['gateway_lost', 'gateway_lost', lastBeat]);
        assert.deepEqual([running?.gatewayId, running?.user], ['gw-dead', 'ada'], 'the row names its gateway and user');
        assert.match(running?.errorMessage ?? '', /the gateway at wss:\/\/dead\/ws\/v1 stopped beating/);
        assert.equal((await a.getRun('queued'))?.status, 'gateway_lost');
        assert.equal((await a.getRun('done'))?.status, 'done');
        assert.equal((await a.getRun('live'))?.status, 'running');
        const usage = await backend.rows(where, 'SELECT run_id, "user", notebook, cell, gpu_class, runtime, started_at, ended_at, gpu_ms, outcome FROM usage');
        assert.deepEqual(
          usage.map((r) => ({ ...r, started_at: Number(r.started_at), ended_at: Number(r.ended_at), gpu_ms: Number(r.gpu_ms) })),
          [{ run_id: 'running', user: 'ada', notebook: 'nb.ipynb', cell: 'c1', gpu_class: 'h100', runtime: 'host-1', started_at: lastBeat - 4000, ended_at: lastBeat, gpu_ms: 4000, outcome: 'gateway_lost' }],
        );
        assert.deepEqual(await a.claimLapsed(now), [], 'claimed once');

        // Slot limits count the running runs of the live gateways other than the asking one.
        assert.deepEqual([...(await a.runningElsewhere('gw-me', now))], [['bob', 1]]);
        assert.deepEqual([...(await a.runningElsewhere('gw-live', now))], []);
        // A requeued run holds nothing: waiting again, unstarted.
        await a.runRequeued('live');
        const requeued = await a.getRun('live');
        assert.deepEqual([requeued?.status, requeued?.runtimeId, requeued?.startedAt], ['queued', null, null]);
        assert.deepEqual([...(await a.runningElsewhere('gw-me', now))], []);
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });

    test('a database at version 1 (runs, runtimes, refs only) gets the later versions and keeps its rows', async () => {
      const where = await backend.empty();
      const migrations = backend === sqlite ? SQLITE_MIGRATIONS : POSTGRES_MIGRATIONS;
      const first = migrations[0]!;
      await backend.exec(where, `${SCHEMA_VERSION_TABLE};
        ${first.sql}
        INSERT INTO schema_version (version, name, applied_at) VALUES (1, '${first.name}', 0);
        INSERT INTO refs (name, manifest, owner, updated_at) VALUES ('main', 'm/1', 'ada', 5);`);
      const store = await DiskBlobStore.open(path.join(dir, `cas${n++}`));
      const { meta } = await backend.open(store, where);
      try {
        assert.equal((await meta.getRef('main'))?.owner, 'ada');
      } finally {
        await meta.close();
      }
      assert.deepEqual(await backend.versions(where), migrations.map((m) => m.version));
      await backend.exec(where, `INSERT INTO users (name, token_hash, admin, public_key, quota_bytes, created_at) VALUES ('ada', 'h', 0, NULL, 0, 1)`);
    });

    test('migrations are applied once, in order, and a database from a newer gateway is refused', async () => {
      const store = await DiskBlobStore.open(path.join(dir, `cas${n++}`));
      const { meta, where } = await backend.open(store);
      await meta.close();
      const all = (backend === sqlite ? SQLITE_MIGRATIONS : POSTGRES_MIGRATIONS).map((m) => m.version);
      assert.deepEqual(all, all.map((_, i) => i + 1), 'versions are 1..n');
      assert.deepEqual(await backend.versions(where), all);
      const again = await backend.open(store, where); // nothing left to apply: opens as is
      await again.meta.close();
      assert.deepEqual(await backend.versions(where), all);
      await backend.exec(where, `INSERT INTO schema_version (version, name, applied_at) VALUES (999, 'from_the_future', 0)`);
      await assert.rejects(backend.open(store, where), /has schema version 999, newer than this gateway knows \(up to 3\); upgrade kernelhop/);
    });
  });
}

test('a SQLite database from before migrations takes them as applied and keeps its rows', async () => {
  const file = path.join(dir, 'legacy.db');
  const db = new Database(file);
  // As the gateway made them before: each store its CREATE TABLE IF NOT EXISTS, on open.
  db.exec(`CREATE TABLE refs (name TEXT PRIMARY KEY, manifest TEXT NOT NULL, owner TEXT NOT NULL, updated_at INTEGER NOT NULL);
           INSERT INTO refs VALUES ('main', 'm/1', 'ada', 5);
           CREATE TABLE users (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL, public_key TEXT,
                               quota_bytes INTEGER NOT NULL, created_at INTEGER NOT NULL);
           INSERT INTO users VALUES ('ada', 'h', 0, NULL, 1000, 5);
           CREATE TABLE user_limits (user TEXT PRIMARY KEY, slots INTEGER NOT NULL);
           INSERT INTO user_limits VALUES ('ada', 3);`);
  db.close();
  const meta = new SqliteMetadataStore(file, await DiskBlobStore.open(path.join(dir, 'cas-legacy')));
  assert.equal((await meta.getRef('main'))?.owner, 'ada');
  await meta.close();
  const snapshots = new SqliteSnapshotStore(file);
  assert.equal((await snapshots.getUser('ada'))?.quotaBytes, 1000);
  await snapshots.close();
  const limits = new SqliteUserLimits(file);
  assert.equal(limits.slots('ada'), 3);
  await limits.close();
  assert.deepEqual(await sqlite.versions(file), SQLITE_MIGRATIONS.map((m) => m.version));
  const check = new Database(file, { readonly: true });
  assert.equal((check.pragma('journal_mode', { simple: true }) as string).toLowerCase(), 'wal');
  check.close();
});

test('Postgres that does not answer fails the open with what to check, without the password', async () => {
  await assert.rejects(
    PostgresMetadataStore.open('postgres://kh:s3cret@127.0.0.1:1/db', await DiskBlobStore.open(path.join(dir, 'cas-down'))),
    (e: unknown) => {
      const m = (e as Error).message;
      return /postgres:\/\/kh:\*\*\*@127.0.0.1:1\/db did not answer/.test(m) && !m.includes('s3cret');
    },
  );
});
