// The gateway suites over users, snapshots, shares, quotas, usage and limits, run again with every row in a real
// PostgreSQL (their gateways get a database each there, test/helpers.ts), as `--metadata postgres://...` runs.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { PostgresTestServer, startPostgres } from './postgresServer.js';

const SUITES = ['snapshots', 'tenancy', 'metering', 'pool'];

let postgres: PostgresTestServer;
let server: string;
before(async () => {
  postgres = await startPostgres();
  server = (await postgres.newDatabase()).replace(/\/[^/]+$/, '');
});
after(async () => {
  await postgres?.stop();
});

function runSuite(file: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--test', file], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

for (const suite of SUITES) {
  test(`${suite}.test on PostgreSQL`, async () => {
    // Without NODE_TEST_CONTEXT, which would make the child report to this runner instead of running its file.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const { code, output } = await runSuite(path.join(__dirname, `${suite}.test.js`), { ...env, KERNELHOP_TEST_POSTGRES: server });
    assert.equal(code, 0, output.split('\n').filter((l) => /not ok|error|Error|expected|actual/.test(l)).slice(0, 40).join('\n'));
    assert.match(output, /# pass [1-9]\d*\n# fail 0/);
  });
}

test('those suites kept their rows in Postgres', async () => {
  // Not vacuous: each suite's gateways made databases there, and signed their users in from them.
  const client = new pg.Client({ connectionString: `${server}/postgres` });
  await client.connect();
  try {
    const { rows } = await client.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE 'gw\\_%'`);
    assert.ok(rows.length >= SUITES.length, `${rows.length} gateway databases`);
    let users = 0;
    for (const { datname } of rows) {
      const db = new pg.Client({ connectionString: `${server}/${datname}` });
      await db.connect();
      users += Number((await db.query('SELECT count(*) AS n FROM users')).rows[0].n);
      await db.end();
    }
    assert.ok(users > rows.length, `${users} users in ${rows.length} databases: more than their admins`);
  } finally {
    await client.end();
  }
});
