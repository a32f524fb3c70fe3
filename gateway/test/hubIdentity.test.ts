// The Hub's answers as hubIdentity.ts takes them. The real JupyterHub is in tests/e2e/test_jupyterhub.py; this HTTP
// server answers /user as the Hub does, to reach the edges a real Hub gives no handle on (how often it is asked,
// a service's token, names kernelhop cannot take).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../src/config.js';
import { HubIdentity } from '../src/hubIdentity.js';
import { SqliteSnapshotStore } from '../src/snapshotStore.js';

test('--jupyterhub needs the Hub API from --hub-api or JUPYTERHUB_API_URL', () => {
  assert.throws(() => loadConfig(['--jupyterhub'], {}), /--hub-api http:\/\/HUB:8081\/hub\/api/);
  assert.equal(loadConfig(['--jupyterhub'], { JUPYTERHUB_API_URL: 'http://127.0.0.1:8081/hub/api' }).hubApiUrl, 'http://127.0.0.1:8081/hub/api');
  assert.throws(() => loadConfig(['--hub-api', 'http://x/hub/api'], {}), /add --jupyterhub/);
  assert.equal(loadConfig([], { JUPYTERHUB_API_URL: 'http://x/hub/api' }).hubApiUrl, undefined);
});

test("the Hub's answer names the user and its admin rights, cached; services and odd names get no identity", async () => {
  const models: Record<string, object> = {
    'tok-ann': { kind: 'user', name: 'ann', admin: true },
    'tok-bob': { kind: 'user', name: 'bob', admin: false },
    'tok-svc': { kind: 'service', name: 'announcer', admin: false },
    'tok-odd': { kind: 'user', name: 'Ann@Example.org', admin: false },
    'tok-fake-admin': { kind: 'user', name: 'admin', admin: false },
  };
  const asked: string[] = [];
  const hub = http.createServer((req, res) => {
    const token = /^token (\S+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
    asked.push(token);
    const model = req.url === '/hub/api/user' ? models[token] : undefined;
    res.writeHead(model === undefined ? 403 : 200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(model ?? { status: 403, message: 'no such token' }));
  });
  await new Promise<void>((r) => hub.listen(0, '127.0.0.1', r));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kernelhop-hub-'));
  const snapshots = new SqliteSnapshotStore(path.join(dir, 'kernelhop.db'));
  const logged: string[] = [];
  const identity = new HubIdentity({
    apiUrl: `http://127.0.0.1:${(hub.address() as AddressInfo).port}/hub/api`,
    snapshots,
    adminUser: 'admin',
    log: (line) => logged.push(line),
  });
  try {
    const ann = await identity.authenticate('tok-ann');
    assert.deepEqual([ann?.name, ann?.admin], ['ann', true]);
    assert.equal((await snapshots.getUser('ann'))?.admin, false, 'admin rights are the Hub\'s, not stored');
    assert.equal((await identity.authenticate('tok-ann'))?.name, 'ann');
    assert.equal(asked.filter((t) => t === 'tok-ann').length, 1, 'the second check is answered from the cache');
    assert.deepEqual([(await identity.authenticate('tok-bob'))?.admin], [false]);
    assert.equal(await identity.authenticate('tok-svc'), undefined);
    assert.equal(await identity.authenticate('tok-odd'), undefined);
    assert.equal(await identity.authenticate('tok-fake-admin'), undefined);
    assert.equal(await identity.authenticate('tok-unknown'), undefined);
    assert.ok(logged.some((l) => /Ann@Example\.org.*refused/.test(l)));
    assert.ok(logged.some((l) => /admin refused: that is the gateway's admin user/.test(l)));
    hub.close();
    await assert.rejects(identity.authenticate('tok-new'), /cannot ask JupyterHub/);
  } finally {
    hub.close();
    await snapshots.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
