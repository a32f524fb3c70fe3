// The SQLite driver adapter, against each driver this Node can load: node:sqlite (Node 22.13+, what the wheel's
// gateway runs on) and better-sqlite3 (a checkout on Node 20). The same behaviour from both is what lets the stores
// ignore which one they got.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { SqliteDriverName, openSqlite } from '../src/sqlite.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kernelhop-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const builtin = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule?.('node:sqlite') !== undefined;

function withDriver<T>(driver: SqliteDriverName, fn: () => T): T {
  const before = process.env.KERNELHOP_SQLITE;
  process.env.KERNELHOP_SQLITE = driver;
  try {
    return fn();
  } finally {
    if (before === undefined) delete process.env.KERNELHOP_SQLITE;
    else process.env.KERNELHOP_SQLITE = before;
  }
}

function loads(driver: SqliteDriverName): boolean {
  try {
    withDriver(driver, () => openSqlite(':memory:').close());
    return true;
  } catch {
    return false;
  }
}

for (const driver of ['node:sqlite', 'better-sqlite3'] as const) {
  test(`${driver}: statements, named parameters, pluck, transactions that roll back, nested savepoints`, { skip: !loads(driver) && `${driver} does not load on Node ${process.version}` }, () => {
    const db = withDriver(driver, () => openSqlite(path.join(dir, `${driver.replace(':', '-')}.db`)));
    assert.equal(db.driver, driver);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)');
    assert.equal(db.prepare('INSERT INTO t (k, n) VALUES (?, ?)').run('a', 1).changes, 1);
    db.prepare('INSERT INTO t (k, n) VALUES (@k, @n)').run({ k: 'b', n: 2 });
    assert.deepEqual({ ...(db.prepare('SELECT * FROM t WHERE k = ?').get('b') as object) }, { k: 'b', n: 2 });
    assert.equal(db.prepare('SELECT * FROM t WHERE k = ?').get('zz'), undefined);
    assert.deepEqual(db.prepare('SELECT k FROM t ORDER BY k').pluck().all(), ['a', 'b']);
    assert.equal(db.prepare('SELECT COUNT(*) FROM t').pluck().get(), 2);

    const insert = db.prepare('INSERT INTO t (k, n) VALUES (?, ?)');
    assert.throws(
      db.transaction(() => {
        insert.run('c', 3);
        insert.run('a', 9); // a duplicate key: the whole transaction goes, 'c' with it
      }),
      /UNIQUE/,
    );
    assert.equal(db.prepare('SELECT COUNT(*) FROM t').pluck().get(), 2);

    const outer = db.transaction(() => {
      insert.run('d', 4);
      assert.throws(db.transaction(() => {
        insert.run('e', 5);
        throw new Error('inner fails');
      }), /inner fails/);
      return db.transaction(() => insert.run('f', 6).changes)();
    });
    assert.equal(outer(), 1);
    assert.deepEqual(db.prepare('SELECT k FROM t ORDER BY k').pluck().all(), ['a', 'b', 'd', 'f']);
    assert.equal(db.open, true);
    db.close();
    assert.equal(db.open, false);
  });
}

test('asking for node:sqlite where this Node has none says which Node has it', { skip: builtin && 'this Node has node:sqlite' }, () => {
  assert.throws(() => withDriver('node:sqlite', () => openSqlite(':memory:')), /no node:sqlite/);
});

test('an unknown KERNELHOP_SQLITE is refused by name', () => {
  process.env.KERNELHOP_SQLITE = 'sqlite4';
  try {
    assert.throws(() => openSqlite(':memory:'), /KERNELHOP_SQLITE=sqlite4 is not "node:sqlite" or "better-sqlite3"/);
  } finally {
    delete process.env.KERNELHOP_SQLITE;
  }
});
