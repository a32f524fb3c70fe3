// GPU-seconds counted per run (usage op), /metrics for the admin, and the run's life in the JSON log.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FakeRuntime, Msg, TOKEN, TestClient, TestGateway, blob, snapshotOf, startTestGateway, testPostgres } from './helpers.js';

let t: TestGateway;
let admin: TestClient;
let ada: TestClient;
let adaToken: string;
let rt: FakeRuntime;

before(async () => {
  t = await startTestGateway();
  admin = await TestClient.connect(t.gw.wsUrl);
  adaToken = ((await admin.call({ op: 'user_add', name: 'ada' })) as { token: string }).token;
  ada = await TestClient.connect(t.gw.wsUrl, adaToken);
  rt = new FakeRuntime(t.grpcAddress, { name: 'gpu-host-1', classes: ['h100'], capacity: 1 });
  await rt.start();
});
after(async () => {
  rt.close();
  admin.close();
  ada.close();
  await t.stop();
});

/** A run of `client` that the fake runtime holds for about `holdMs` and ends as `status`; its wall time on the slot. */
async function runFor(client: TestClient, labels: Msg, holdMs: number, status = 'ok'): Promise<number> {
  const chunk = blob(`state of ${JSON.stringify(labels)} ${Math.random()}`);
  const snap = snapshotOf([chunk]);
  await client.putBlobs([chunk, snap]);
  const id = client.id();
  client.send({ id, op: 'run', session: 's', gpu_class: 'h100', code: 'pass', snapshot: snap.digest, timeout_s: 0, ...labels });
  const { assign } = await rt.nextMessage('assign');
  const taken = Date.now();
  await new Promise((r) => setTimeout(r, holdMs));
  const [hash, size] = snap.digest.split('/');
  rt.event(assign.run_id, { done: { status, snapshot: { hash, size_bytes: Number(size) }, timings_json: '{"run_s":0.05,"fetch_s":0.01}' } });
  const { final } = await client.untilFinal(id);
  assert.equal(final.ok, true, JSON.stringify(final));
  return (Date.now() - taken) / 1000;
}

interface Report {
  total: { runs: number; gpuSeconds: number };
  by: Record<string, Array<{ key: string; runs: number; gpuSeconds: number }>>;
}

test("each run's GPU-seconds are counted for its user, notebook, cell, class and runtime", async () => {
  const walls = [
    await runFor(ada, { notebook: 'lab/train.ipynb', cell: 'c-1' }, 120),
    await runFor(ada, { notebook: 'lab/train.ipynb', cell: 'c-2' }, 60, 'error'),
    await runFor(admin, { notebook: 'ops.ipynb', cell: 'c-9' }, 30),
  ];
  const mine = ((await ada.call({ op: 'usage' })) as { usage: Report }).usage;
  assert.equal(mine.total.runs, 2, 'a user sees its own runs only');
  // Counted from the runtime taking the run to its end: never more than the test saw pass around it.
  assert.ok(mine.total.gpuSeconds > 0.15 && mine.total.gpuSeconds <= walls[0] + walls[1] + 0.05, JSON.stringify(mine.total));
  assert.deepEqual(mine.by.user.map((r) => [r.key, r.runs]), [['ada', 2]]);
  assert.deepEqual(mine.by.notebook.map((r) => [r.key, r.runs]), [['ada\tlab/train.ipynb', 2]]);
  assert.deepEqual(mine.by.cell.map((r) => r.key), ['ada\tlab/train.ipynb\tc-1', 'ada\tlab/train.ipynb\tc-2']);
  assert.deepEqual(mine.by.gpu_class.map((r) => [r.key, r.runs]), [['h100', 2]]);
  assert.deepEqual(mine.by.runtime.map((r) => [r.key, r.runs]), [['gpu-host-1', 2]]);

  const everyone = ((await admin.call({ op: 'usage' })) as { usage: Report }).usage;
  assert.equal(everyone.total.runs, 3);
  const adas = ((await admin.call({ op: 'usage', user: 'ada' })) as { usage: Report }).usage;
  assert.equal(adas.total.runs, 2, 'the admin may ask for one user');
  const later = ((await admin.call({ op: 'usage', since: Date.now() + 60_000 })) as { usage: Report }).usage;
  assert.equal(later.total.runs, 0, 'since filters by when the run ended');

  const refused = await ada.call({ op: 'usage', user: 'admin' });
  assert.equal(refused.ok, false);
  assert.equal((refused.error as { code: string }).code, 'forbidden');
  const bad = await ada.call({ op: 'usage', since: 'yesterday' });
  assert.equal((bad.error as { code: string }).code, 'bad_request');
  const badLabel = await ada.call({ op: 'run', session: 's', gpu_class: 'h100', code: 'pass', snapshot: 'x', notebook: 7 });
  assert.equal((badLabel.error as { code: string }).code, 'bad_request');
});

test('GET /metrics is the admin\'s, in Prometheus text, with the pool and the counts', async () => {
  const url = t.gw.wsUrl.replace(/^ws:/, 'http:').replace(/\/ws\/v1$/, '/metrics');
  assert.equal((await fetch(url)).status, 401);
  assert.equal((await fetch(url, { headers: { Authorization: 'Bearer wrong' } })).status, 401);
  assert.equal((await fetch(url, { headers: { Authorization: `Bearer ${adaToken}` } })).status, 403);
  const res = await fetch(url, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await res.text();
  assert.match(text, /^kernelhop_queue_depth\{gpu_class="h100"\} 0$/m);
  assert.match(text, /^kernelhop_slots\{gpu_class="h100",state="free"\} 1$/m);
  assert.match(text, /^kernelhop_runtimes\{gpu_class="h100"\} 1$/m);
  assert.match(text, /^kernelhop_gpu_seconds_total\{user="ada",gpu_class="h100"\} 0\.\d+$/m);
  assert.match(text, /^kernelhop_run_seconds_count\{gpu_class="h100",outcome="error"\} 1$/m);
  assert.match(text, /^kernelhop_queue_wait_seconds_count\{gpu_class="h100"\} [1-9]/m);
  assert.match(text, /^kernelhop_hop_phase_seconds_count\{phase="run"\} [1-9]/m);
  assert.match(text, /^kernelhop_bytes_total\{link="ws",direction="in"\} [1-9]/m);
  assert.match(text, /^kernelhop_gateway_process_resident_memory_bytes \d+/m);
});

test('a gateway stopped cleanly still counts the GPU-seconds of the run it was relaying', async () => {
  // The same data directory and database, opened again after the stop, hold the ledger.
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kernelhop-gw-'));
  const metadataStore = await testPostgres();
  const first = await startTestGateway({ dataDir, ...(metadataStore && { metadataStore }) });
  const client = await TestClient.connect(first.gw.wsUrl);
  const runtime = new FakeRuntime(first.grpcAddress, { name: 'gpu-host-2', classes: ['h100'], capacity: 1 });
  await runtime.start();
  const chunk = blob('state of a run the stop ends');
  const snap = snapshotOf([chunk]);
  await client.putBlobs([chunk, snap]);
  const id = client.id();
  client.send({ id, op: 'run', session: 's', gpu_class: 'h100', code: 'pass', snapshot: snap.digest, timeout_s: 0 });
  await runtime.nextMessage('assign');
  await new Promise((r) => setTimeout(r, 200));
  await first.gw.close();
  runtime.close();
  client.close();
  const second = await startTestGateway({ dataDir, ...(metadataStore && { metadataStore }) });
  try {
    const reader = await TestClient.connect(second.gw.wsUrl);
    const report = ((await reader.call({ op: 'usage' })) as { usage: Report }).usage;
    reader.close();
    assert.equal(report.total.runs, 1, 'the run the stop ended is counted');
    assert.ok(report.total.gpuSeconds >= 0.15, `${report.total.gpuSeconds} GPU-seconds: from its start to the stop`);
    assert.deepEqual(report.by.runtime.map((r) => r.key), ['gpu-host-2']);
  } finally {
    await second.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
