// The stores beside metadata (users, holds, quotas, snapshots, refs and shares; runtime tokens; the usage ledger; user
// limits) run one suite on both databases: SQLite under --data and a real PostgreSQL started here. What only several
// gateways on one Postgres can show (quotas raced from two pools, limits changed on another gateway) follows.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { startGateway } from '../src/server.js';
import { RuntimeTokenStore, SqliteRuntimeTokens } from '../src/runtimeTokens.js';
import { SqliteUserLimits, UserLimits } from '../src/runs/userLimits.js';
import { SnapshotRow, SnapshotStore, SqliteSnapshotStore, StoreError } from '../src/snapshotStore.js';
import { openPostgres } from '../src/stores/postgres.js';
import { PostgresRuntimeTokens } from '../src/stores/postgresRuntimeTokens.js';
import { PostgresSnapshotStore } from '../src/stores/postgresSnapshotStore.js';
import { PostgresUsageLedger } from '../src/stores/postgresUsageLedger.js';
import { PostgresUserLimits } from '../src/stores/postgresUserLimits.js';
import { SqliteUsageLedger, UsageEntry, UsageLedger } from '../src/usage.js';
import { TestClient } from './helpers.js';
import { bothDatabases } from './postgresServer.js';

const { dir, postgres } = bothDatabases('kernelhop-accounts-');

interface Stores {
  snapshots: SnapshotStore;
  tokens: RuntimeTokenStore;
  usage: UsageLedger;
  limits: UserLimits;
  close(): Promise<void>;
}

interface Backend {
  name: string;
  /** A fresh database; `where` (a file or a URL) opens the same one again, as another gateway would. */
  open(where?: string): Promise<Stores & { where: string }>;
}

let n = 0;
const sqlite: Backend = {
  name: 'SQLite',
  open: async (where = path.join(dir, `k${n++}.db`)) => {
    const s = {
      snapshots: new SqliteSnapshotStore(where),
      tokens: new SqliteRuntimeTokens(where),
      usage: new SqliteUsageLedger(where),
      limits: new SqliteUserLimits(where),
    };
    return { ...s, where, close: async () => void (await Promise.all(Object.values(s).map((x) => x.close()))) };
  },
};

const postgresBackend: Backend = {
  name: 'PostgreSQL',
  open: async (where) => {
    const url = where ?? (await postgres.newDatabase());
    const pool = await openPostgres(url);
    const s = {
      snapshots: new PostgresSnapshotStore(pool),
      tokens: new PostgresRuntimeTokens(pool),
      usage: new PostgresUsageLedger(pool),
      limits: await PostgresUserLimits.open(pool, url),
    };
    return {
      ...s,
      where: url,
      close: async () => {
        await Promise.all(Object.values(s).map((x) => x.close()));
        await pool.end();
      },
    };
  },
};

function snap(owner: string, id: string, manifest: string, createdAt: number): SnapshotRow {
  return { id, owner, author: owner, manifest, record: '{}', signature: 'sig', imported: false, createdAt, sizeBytes: 10 };
}

function useOf(runId: string, user: string, notebook: string, cell: string, seconds: number, endedAt: number): UsageEntry {
  return { runId, user, notebook, cell, gpuClass: 'h100', runtime: 'rt1', startedAt: endedAt - seconds * 1000, endedAt, outcome: 'ok' };
}

for (const backend of [sqlite, postgresBackend]) {
  describe(`users, snapshots, tokens, usage and limits on ${backend.name}`, () => {
    let s: Stores & { where: string };
    before(async () => {
      s = await backend.open();
    });
    after(async () => {
      await s.close();
    });

    test('users: the admin, tokens made and rotated, quotas, listing, removal', async () => {
      const db = s.snapshots;
      await db.ensureAdmin('admin', 'kh_admin');
      await db.ensureAdmin('admin', 'kh_admin'); // every start says it again
      assert.deepEqual(await db.authenticate('kh_admin'), { name: 'admin', admin: true, publicKey: null, quotaBytes: 0 });
      const token = await db.addUser('zed', 100);
      await assert.rejects(db.addUser('zed', 5), (e: unknown) => e instanceof StoreError && e.code === 'exists');
      assert.equal((await db.authenticate(token))?.name, 'zed');
      const rotated = await db.rotateToken('zed');
      assert.equal(await db.authenticate(token), undefined, 'the old token stops working');
      assert.equal((await db.authenticate(rotated))?.admin, false);
      await db.setQuota('zed', 250);
      await db.setPublicKey('zed', 'a2V5');
      assert.deepEqual(await db.getUser('zed'), { name: 'zed', admin: false, publicKey: 'a2V5', quotaBytes: 250 });
      await assert.rejects(db.setQuota('nobody', 1), (e: unknown) => e instanceof StoreError && e.code === 'not_found');
      await assert.rejects(db.rotateToken('nobody'), (e: unknown) => e instanceof StoreError && e.code === 'not_found');
      await db.addUser('Yan', 0);
      await db.reserveBlobs('Yan', [{ digest: 'd/users-1', size: 40 }], 1);
      // Byte order, as SQLite sorts: capitals first.
      assert.deepEqual(
        (await db.listUsers()).map((u) => [u.name, u.usedBytes]),
        [['Yan', 40], ['admin', 0], ['zed', 0]],
      );
      // The admin's token, given at start, is taken back from whoever had it.
      await db.ensureAdmin('admin', rotated);
      assert.equal((await db.authenticate(rotated))?.name, 'admin');
      assert.equal(await db.getUser('zed'), undefined);
      await db.removeUser('Yan');
      assert.equal((await db.heldDigests()).has('d/users-1'), false, 'its holds went with it');
      await assert.rejects(db.removeUser('Yan'), (e: unknown) => e instanceof StoreError && e.code === 'not_found');
      await db.ensureAdmin('admin', 'kh_admin');
    });

    test('holds: reservations weigh each blob in order against the quota; a result is held whole or not at all', async () => {
      const db = s.snapshots;
      await db.addUser('ada', 100);
      const r = await db.reserveBlobs(
        'ada',
        [
          { digest: 'd/a1', size: 60 },
          { digest: 'd/a1', size: 60 }, // the same blob twice: held once
          { digest: 'd/a2', size: 50 }, // over: refused, not held
          { digest: 'd/a3', size: 40 }, // still fits
        ],
        10,
      );
      assert.deepEqual(r, [{ ok: true }, { ok: true }, { ok: false, used: 60, quota: 100 }, { ok: true }]);
      assert.equal(await db.usedBytes('ada'), 100);
      assert.deepEqual(await db.reserveBlobs('ada', [{ digest: 'd/a1', size: 60 }], 20), [{ ok: true }], 'held already: costs nothing');
      assert.deepEqual(await db.holdResult('ada', [{ digest: 'd/a1', size: 60 }, { digest: 'd/a4', size: 1 }], 30), {
        ok: false,
        used: 100,
        quota: 100,
        adding: 1,
      });
      assert.equal((await db.visibleDigests('ada', ['d/a4'], 30)).size, 0, 'none of a refused result is held');
      await db.setQuota('ada', 0);
      assert.deepEqual(await db.holdResult('ada', [{ digest: 'd/a4', size: 1 }, { digest: 'd/a4', size: 1 }, { digest: 'd/a1', size: 60 }], 30), {
        ok: true,
        adding: 1,
      });
      assert.deepEqual([...(await db.visibleDigests('ada', ['d/a1', 'd/a2', 'd/a3', 'd/a4', 'd/none'], 30))].sort(), ['d/a1', 'd/a3', 'd/a4']);
      // a3 was last held at 10, a1 and a4 at 30: a1 refreshed, the other two are stale for gc.
      await db.refreshHolds('ada', ['d/a1', 'd/a3'], 20, 40); // a3 is refreshed; a1 (held at 30) was recent enough
      await db.refreshHolds('ada', ['d/a1'], 35, 40);
      assert.equal(await db.dropStaleHolds(35), 1);
      assert.deepEqual([...(await db.visibleDigests('ada', ['d/a1', 'd/a3', 'd/a4'], 40))].sort(), ['d/a1', 'd/a3']);
      assert.ok((await db.heldDigests()).has('d/a3'));
      assert.equal((await db.heldDigests()).has('d/a4'), false);
    });

    test('snapshots and refs: saved within the quota, found by prefix, deleted with the holds only they needed', async () => {
      const db = s.snapshots;
      await db.addUser('bea', 100);
      await db.insertSnapshot(snap('bea', 'aaa1', 'm/1', 1), [{ digest: 'd/b1', size: 30 }, { digest: 'm/1', size: 10 }], 'main', 5);
      await db.insertSnapshot(snap('bea', 'aab2', 'm/2', 2), [{ digest: 'd/b1', size: 30 }, { digest: 'd/b2', size: 20 }, { digest: 'm/2', size: 10 }], null, 6);
      assert.equal(await db.usedBytes('bea'), 70);
      await assert.rejects(
        db.insertSnapshot(snap('bea', 'aac3', 'm/3', 3), [{ digest: 'd/b3', size: 31 }, { digest: 'm/3', size: 10 }], 'main', 7),
        (e: unknown) => e instanceof StoreError && e.code === 'quota_exceeded' && /70 of 100 bytes used, 41 more asked/.test(e.message),
      );
      assert.equal(await db.getSnapshot('bea', 'aac3'), undefined, 'a refused save writes nothing');
      assert.equal(await db.getRef('bea', 'main'), 'aaa1');
      assert.equal(await db.ownedManifestSize('bea', 'm/2'), 10);
      assert.equal(await db.ownedManifestSize('bea', 'm/9'), undefined);
      await db.insertSnapshot(snap('bea', 'aab2', 'm/2', 2), null, 'Zeta', 8); // saved again: the row stays, the ref moves
      assert.deepEqual(await db.listRefs('bea'), [{ name: 'Zeta', snapshot: 'aab2' }, { name: 'main', snapshot: 'aaa1' }]);
      assert.deepEqual((await db.listOwn('bea')).map((r) => r.id), ['aaa1', 'aab2']);
      assert.deepEqual(
        (await db.findVisible('bea', 'aa', 9)).map((r) => [r.id, r.shared]),
        [['aaa1', false], ['aab2', false]],
      );
      assert.equal((await db.getSnapshot('bea', 'aab2'))?.imported, false);
      assert.ok((await db.liveDigests()).has('d/b2'));
      await db.deleteSnapshot('bea', 'aab2');
      // d/b1 is still named by aaa1; d/b2 and m/2 were aab2's alone.
      assert.equal(await db.usedBytes('bea'), 40);
      assert.deepEqual(await db.listRefs('bea'), [{ name: 'main', snapshot: 'aaa1' }]);
      assert.equal((await db.liveDigests()).has('d/b2'), false);
      assert.equal(await db.deleteRef('bea', 'main'), true);
      assert.equal(await db.deleteRef('bea', 'main'), false);
    });

    test('shares: with a user or by link, until revoked or expired; removing a user takes its shares', async () => {
      const db = s.snapshots;
      await db.addUser('cy', 0);
      await db.addUser('dee', 0);
      await db.addUser('eve', 0);
      await db.insertSnapshot(snap('cy', 'c1', 'm/c1', 1), [{ digest: 'd/c1', size: 5 }, { digest: 'm/c1', size: 5 }], null, 1);
      assert.equal((await db.visibleDigests('dee', ['d/c1'], 2)).size, 0);
      const direct = await db.addShare({ owner: 'cy', snapshot: 'c1', grantee: 'dee', expiresAt: null }, 2);
      assert.equal(direct.link, null);
      assert.deepEqual([...(await db.visibleDigests('dee', ['d/c1', 'm/c1', 'd/other'], 3))].sort(), ['d/c1', 'm/c1']);
      assert.deepEqual((await db.findVisible('dee', 'c', 3)).map((r) => [r.id, r.shared]), [['c1', true]]);
      const link = await db.addShare({ owner: 'cy', snapshot: 'c1', grantee: null, expiresAt: 100 }, 3);
      assert.equal(await db.redeemLink('eve', 'khl_wrong', 3), undefined);
      const redeemed = await db.redeemLink('eve', link.link as string, 3);
      assert.deepEqual([redeemed?.id, redeemed?.link, redeemed?.expiresAt], [link.id, true, 100]);
      await db.redeemLink('eve', link.link as string, 4); // twice: once
      assert.deepEqual((await db.listSharedWith('eve', 50)).map((r) => [r.id, r.shareId, r.expiresAt]), [['c1', link.id, 100]]);
      assert.equal((await db.listSharedWith('eve', 100)).length, 0, 'expired');
      assert.equal((await db.redeemLink('dee', link.link as string, 100)), undefined, 'an expired link redeems nothing');
      assert.deepEqual((await db.listShares('cy', 'c1')).map((r) => r.id), [direct.id, link.id]);
      assert.equal(await db.revokeShare('cy', direct.id, 5), true);
      assert.equal(await db.revokeShare('cy', direct.id, 5), false);
      assert.equal((await db.visibleDigests('dee', ['d/c1'], 6)).size, 0);
      assert.equal((await db.listShares('cy', 'c1'))[0]?.revokedAt, 5);
      await db.removeUser('cy');
      assert.deepEqual(await db.listShares('cy', 'c1'), []);
      assert.equal((await db.visibleDigests('eve', ['d/c1'], 6)).size, 0);
    });

    test('runtime tokens: made once, authenticated until revoked', async () => {
      const a = await s.tokens.create('h100', 1);
      const b = await s.tokens.create(null, 2);
      assert.match(a.token, /^khr_/);
      assert.deepEqual(await s.tokens.authenticate(a.token), { id: a.credential.id, gpuClass: 'h100', createdAt: 1, revokedAt: null });
      assert.equal(await s.tokens.authenticate('khr_nope'), undefined);
      assert.equal(await s.tokens.revoke(a.credential.id, 3), true);
      assert.equal(await s.tokens.revoke(a.credential.id, 4), false);
      assert.equal(await s.tokens.authenticate(a.token), undefined);
      assert.equal((await s.tokens.authenticate(b.token))?.gpuClass, null);
      assert.deepEqual(
        (await s.tokens.list()).map((c) => [c.id, c.revokedAt]),
        [
          [a.credential.id, 3],
          [b.credential.id, null],
        ],
      );
    });

    test('usage: one row per run, reported per user, notebook, cell, class and runtime, since a time', async () => {
      await s.usage.record(useOf('r1', 'ada', 'a.ipynb', 'c1', 2, 1_000_000));
      await s.usage.record(useOf('r1', 'ada', 'a.ipynb', 'c1', 99, 1_000_000)); // counted once
      await s.usage.record(useOf('r2', 'ada', 'a.ipynb', 'c2', 1.5, 2_000_000));
      await s.usage.record(useOf('r3', 'ben', 'a.ipynb', 'c1', 4, 3_000_000));
      const all = await s.usage.report({});
      assert.deepEqual(all.total, { runs: 3, gpuSeconds: 7.5 });
      assert.equal(all.since, null);
      assert.deepEqual(all.by.user, [
        { key: 'ben', runs: 1, gpuSeconds: 4 },
        { key: 'ada', runs: 2, gpuSeconds: 3.5 },
      ]);
      assert.deepEqual(
        all.by.cell.map((l) => l.key),
        ['ben\ta.ipynb\tc1', 'ada\ta.ipynb\tc1', 'ada\ta.ipynb\tc2'],
      );
      assert.deepEqual(all.by.gpu_class, [{ key: 'h100', runs: 3, gpuSeconds: 7.5 }]);
      const ada = await s.usage.report({ user: 'ada', since: 1_500_000 });
      assert.deepEqual([ada.total, ada.since, ada.by.notebook], [{ runs: 1, gpuSeconds: 1.5 }, 1_500_000, [{ key: 'ada\ta.ipynb', runs: 1, gpuSeconds: 1.5 }]]);
      assert.deepEqual((await s.usage.report({ user: 'nobody' })).total, { runs: 0, gpuSeconds: 0 });
    });

    test('limits: set, read at once, removed; another instance on the database reads them on open', async () => {
      assert.equal(s.limits.slots('ada'), Infinity);
      await s.limits.set('ada', 2);
      await s.limits.set('Ben', 1);
      await s.limits.set('ada', 3);
      assert.equal(s.limits.slots('ada'), 3);
      assert.deepEqual(s.limits.list(), [{ user: 'ada', slots: 3 }, { user: 'Ben', slots: 1 }]);
      await s.limits.set('Ben', null);
      const again = await backend.open(s.where);
      try {
        assert.deepEqual(again.limits.list(), [{ user: 'ada', slots: 3 }]);
      } finally {
        await again.close();
      }
    });
  });
}

/** Waits until `check` holds, polling: a change on another gateway arrives when it arrives. */
async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('several gateways on one PostgreSQL', () => {
  test('reservations raced from two pools against one quota never exceed it', async () => {
    const a = await postgresBackend.open();
    const b = await postgresBackend.open(a.where);
    try {
      await a.snapshots.addUser('fay', 1000);
      // 2 x 30 reservations of 100 bytes each, all at once, plus results and saves in between: 10 fit.
      const size = 100;
      const work: Array<Promise<number>> = [];
      for (let i = 0; i < 30; i++) {
        for (const [name, db] of [['a', a.snapshots], ['b', b.snapshots]] as const) {
          const d = `d/${name}${i}`;
          if (i % 3 === 0) {
            work.push(db.holdResult('fay', [{ digest: d, size }], i).then((r) => (r.ok ? size : 0)));
          } else if (i % 3 === 1) {
            work.push(
              db.insertSnapshot(snap('fay', `s${name}${i}`, d, i), [{ digest: d, size }], null, i).then(
                () => size,
                (e: unknown) => {
                  assert.ok(e instanceof StoreError && e.code === 'quota_exceeded', String(e));
                  return 0;
                },
              ),
            );
          } else {
            work.push(db.reserveBlobs('fay', [{ digest: d, size }], i).then((r) => (r[0]?.ok ? size : 0)));
          }
        }
      }
      const granted = (await Promise.all(work)).reduce((x, y) => x + y, 0);
      assert.equal(granted, 1000, 'exactly the quota was granted');
      assert.equal(await a.snapshots.usedBytes('fay'), 1000);
      assert.equal(await b.snapshots.usedBytes('fay'), 1000);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('a limit set on one gateway reaches the other, also across a lost listener connection', async () => {
    const a = await postgresBackend.open();
    const b = await postgresBackend.open(a.where);
    const admin = new pg.Client({ connectionString: a.where });
    await admin.connect();
    try {
      await a.limits.set('gus', 2);
      await eventually('b sees the new limit', () => b.limits.slots('gus') === 2);
      await a.limits.set('gus', null);
      await eventually('b sees it removed', () => b.limits.slots('gus') === Infinity);
      // A change no notice tells of (written behind the stores' backs), then the listeners' connections cut: only the
      // read after listening again can bring it.
      await admin.query(`INSERT INTO user_limits ("user", slots) VALUES ('hal', 4)`);
      const cut = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kernelhop-user-limits'`);
      assert.equal(cut.rowCount, 2, 'both listeners were connected');
      await eventually('b read the limits again after reconnecting', () => b.limits.slots('hal') === 4);
      await eventually('both listen again', async () => {
        const r = await admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'kernelhop-user-limits'`);
        return r.rows[0].n === 2;
      });
      await a.limits.set('hal', 1);
      await eventually('notices reach b after the reconnect', () => b.limits.slots('hal') === 1);
    } finally {
      await admin.end();
      await a.close();
      await b.close();
    }
  });

  test('a gateway on Postgres writes no kernelhop.db; a user added on one gateway signs in on another', async () => {
    const url = await postgres.newDatabase();
    const token = 'kh_pg_admin';
    const start = (dataDir: string) =>
      startGateway(
        { host: '127.0.0.1', port: 0, grpcPort: 0, dataDir, token, tokenGenerated: false, metadataStore: { kind: 'postgres', url } },
        { log: () => undefined },
      );
    const dirA = mkdtempSync(path.join(dir, 'gw-a-'));
    const dirB = mkdtempSync(path.join(dir, 'gw-b-'));
    const a = await start(dirA);
    const b = await start(dirB);
    try {
      const admin = await TestClient.connect(a.wsUrl, token);
      const added = await admin.call({ op: 'user_add', name: 'ivy', quota_bytes: 0 });
      assert.equal(added.ok, true, JSON.stringify(added));
      const limited = await admin.call({ op: 'user_limit', name: 'ivy', slots: 1 });
      assert.equal(limited.ok, true, JSON.stringify(limited));
      admin.close();
      const ivy = await TestClient.connect(b.wsUrl, added.token as string);
      const listed = await ivy.call({ op: 'user_list' });
      ivy.close();
      assert.equal((listed.error as { code: string } | undefined)?.code, 'forbidden', 'ivy signs in on b, and is no admin there either');
      // b's limits, which its scheduler reads, are a's.
      const adminB = await TestClient.connect(b.wsUrl, token);
      await eventually('b has the limit set on a', async () => {
        const r = await adminB.call({ op: 'user_limit' });
        return JSON.stringify(r.limits) === JSON.stringify([{ user: 'ivy', slots: 1 }]);
      });
      adminB.close();
    } finally {
      await a.close();
      await b.close();
    }
    for (const d of [dirA, dirB]) {
      assert.equal(existsSync(path.join(d, 'kernelhop.db')), false, `${readdirSync(d).join(', ')}`);
      assert.deepEqual(readdirSync(d).filter((f) => f.startsWith('kernelhop')), []);
    }
  });
});

