// Gateway liveness and the slot limits across gateways (ARCHITECTURE.md, "Several gateways"), through real gateways
// with fake runtimes: two gateways on one PostgreSQL count a user's runs on both against its limit, and a gateway
// ends the runs of a lapsed one (here its own previous incarnation, on SQLite) and counts their GPU-seconds.
import assert from 'node:assert/strict';
import { parseDigest } from '@kernelhop/kernel-snapshot';
import { after, before, test } from 'node:test';
import { FakeRuntime, Msg, TestClient, TestGateway, blob, snapshotOf, startTestGateway } from './helpers.js';
import { PostgresTestServer, startPostgres } from './postgresServer.js';

let postgres: PostgresTestServer;
const closing: Array<() => Promise<void> | void> = [];
before(async () => {
  postgres = await startPostgres();
});
after(async () => {
  for (const close of closing.reverse()) await close();
  await postgres?.stop();
});

const LIVENESS_S = 0.2;

async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function gateway(metadataStore?: { kind: 'postgres'; url: string }): Promise<TestGateway> {
  const t = await startTestGateway({ livenessS: LIVENESS_S, ...(metadataStore && { metadataStore }) });
  closing.push(() => t.stop());
  return t;
}

async function runtime(t: TestGateway, name: string): Promise<FakeRuntime> {
  const rt = new FakeRuntime(t.grpcAddress, { name, classes: ['h100'], capacity: 2, token: t.runtimeToken });
  closing.push(() => rt.close());
  await rt.start();
  return rt;
}

async function client(t: TestGateway, token?: string): Promise<TestClient> {
  const ws = await TestClient.connect(t.gw.wsUrl, token);
  closing.push(() => ws.close());
  return ws;
}

test("a user's runs through two gateways count against its one slot limit; the held run is placed once the other ends", async () => {
  const url = await postgres.newDatabase();
  const a = await gateway({ kind: 'postgres', url });
  const b = await gateway({ kind: 'postgres', url });
  const admin = await client(a);
  const { token } = (await admin.call({ op: 'user_add', name: 'ann' })) as { token: string };
  await admin.call({ op: 'user_limit', name: 'ann', slots: 1 });
  const chunk = blob('state of ann');
  const snap = snapshotOf([chunk]);
  // Each gateway here has a blob store of its own (under its --data); the rows are shared.
  const viaA = await client(a, token);
  const viaB = await client(b, token);
  await viaA.putBlobs([chunk, snap]);
  await viaB.putBlobs([chunk, snap]);
  const rtA = await runtime(a, 'rt-a');
  const rtB = await runtime(b, 'rt-b');
  const run = (ws: TestClient, session: string): string => {
    const id = ws.id();
    ws.send({ id, op: 'run', session, gpu_class: 'h100', code: 'x = 1', snapshot: snap.digest, timeout_s: 0 });
    return id;
  };
  const finish = async (ws: TestClient, rt: FakeRuntime, runId: string, re: string): Promise<Msg> => {
    const [hash, size] = snap.digest.split('/');
    rt.event(runId, { started: { worker: 'w', warm: false } });
    rt.event(runId, { done: { status: 'ok', snapshot: { hash, size_bytes: Number(size) }, timings_json: '{}' } });
    return (await ws.untilFinal(re)).final;
  };

  const first = run(viaA, 'nb-1');
  const { assign: onA } = await rtA.nextMessage('assign');
  await until('the run is running in the shared table', async () => (await a.gw.metadata.getRun(onA.run_id))?.status === 'running');
  // B beats (and so reads the table) at least once more before the second run comes.
  await new Promise((r) => setTimeout(r, 3 * LIVENESS_S * 1000));
  const second = run(viaB, 'nb-2');
  assert.equal((await viaB.next(second)).event, 'queued', 'rt-b has two free slots, but ann holds her one through A');
  await assert.rejects(rtB.nextMessage('assign', 4 * LIVENESS_S * 1000), /no assign/);
  assert.equal((await finish(viaA, rtA, onA.run_id, first)).ok, true);
  // B learns on a beat that the run through A ended, and places the held run.
  const { assign: onB } = await rtB.nextMessage('assign', 5000);
  assert.equal((await finish(viaB, rtB, onB.run_id, second)).ok, true);
});

test("a restarted gateway ends its previous incarnation's runs as gateway_lost and counts their GPU-seconds", async () => {
  const t = await gateway();
  const { metadata, usage } = t.gw;
  await metadata.runtimeRegistered({ id: 'rt-old', name: 'host-1', classes: [{ name: 'h100', simulated: true }], capacity: 1, version: 't' });
  const snapshot = parseDigest(snapshotOf([blob('x')]).digest);
  const before = { gatewayId: 'gw-before', user: 'ann', notebook: 'nb.ipynb', cell: 'c1' };
  await metadata.runCreated({ id: 'run-old', session: 's', gpuClass: 'h100', snapshot, ...before });
  await metadata.runStarted('run-old', 'rt-old');
  await new Promise((r) => setTimeout(r, 300));
  // The previous incarnation's last beat, 300 ms into the run; it beat every 50 ms, so it lapses 150 ms later.
  await metadata.beat({ id: 'gw-before', addr: 'ws://127.0.0.1:1/ws/v1', intervalMs: 50 }, Date.now());
  await until('the run is claimed', async () => (await metadata.getRun('run-old'))?.status === 'gateway_lost');
  const report = await usage.report({ user: 'ann' });
  assert.equal(report.total.runs, 1);
  assert.ok(report.total.gpuSeconds >= 0.25 && report.total.gpuSeconds < 2, `${report.total.gpuSeconds} GPU-seconds: from its start to the last beat`);
  assert.deepEqual(report.by.runtime.map((r) => r.key), ['host-1']);
});
