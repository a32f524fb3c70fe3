// Several gateways, one runtime (ARCHITECTURE.md, "Several gateways"), as one gateway sees it: the runtime says which
// of its slots other gateways' runs hold (SlotsTaken), and refuses a run placed on one before the gateway heard
// (Refused); the gateway then neither places runs nor keeps sessions warm there, and a refused run waits again at its
// old place in line, never failed.
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { FakeRuntime, Msg, TestClient, TestGateway, blob, snapshotOf, startTestGateway } from './helpers.js';

let t: TestGateway;
let ws: TestClient;
let snapshot: string;
const runtimes: FakeRuntime[] = [];

before(async () => {
  t = await startTestGateway();
  ws = await TestClient.connect(t.gw.wsUrl);
  const chunk = blob('state');
  const snap = snapshotOf([chunk]);
  await ws.putBlobs([chunk, snap]);
  snapshot = snap.digest;
});
afterEach(async () => {
  for (const r of runtimes.splice(0)) r.close();
  await new Promise((r) => setTimeout(r, 100));
});
after(async () => {
  ws.close();
  await t.stop();
});

async function runtime(capacity = 1): Promise<FakeRuntime> {
  const rt = new FakeRuntime(t.grpcAddress, { name: 'rt-1', classes: ['h100'], capacity });
  runtimes.push(rt);
  await rt.start();
  return rt;
}

function run(session: string): string {
  const id = ws.id();
  ws.send({ id, op: 'run', session, gpu_class: 'h100', code: 'x = 1', snapshot, timeout_s: 0 });
  return id;
}

async function finish(rt: FakeRuntime, runId: string, re: string): Promise<Msg> {
  const [hash, size] = snapshot.split('/');
  rt.event(runId, { started: { worker: 'w', warm: false } });
  rt.event(runId, { done: { status: 'ok', snapshot: { hash, size_bytes: Number(size) }, timings_json: '{}' } });
  return (await ws.untilFinal(re)).final;
}

async function classes(): Promise<Msg> {
  return ((await ws.call({ op: 'classes' })).classes as Record<string, Msg>).h100 as Msg;
}

async function until(what: string, ok: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a refused run waits again at its old place and runs next; nothing fails', async () => {
  const rt = await runtime();
  const first = run('nb-1');
  const { assign: a1 } = await rt.nextMessage('assign');
  const second = run('nb-2');
  assert.equal((await ws.next(second)).event, 'queued');
  // The runtime took slot 0 for another gateway's run just before this assignment came.
  rt.slotsTaken([0]);
  rt.event(a1.run_id, { refused: { reason: 'slot 0 is held by a run of the gateway at B' } });
  const again = await ws.next(first);
  assert.equal(again.event, 'queued');
  assert.equal(again.position, 1, 'the refused run is first in line again, ahead of the one asked for after it');
  await assert.rejects(rt.nextMessage('assign', 300));
  rt.slotsTaken([]);
  const { assign: a2 } = await rt.nextMessage('assign', 2000);
  assert.equal(a2.run_id, a1.run_id, 'the same run, placed again');
  assert.equal((await finish(rt, a2.run_id, first)).ok, true);
  const { assign: a3 } = await rt.nextMessage('assign', 2000);
  assert.equal((await finish(rt, a3.run_id, second)).ok, true);
});

test("a slot another gateway takes is placed on no more; a warm worker of ours there was evicted; freed, it is placed on", async () => {
  const rt = await runtime();
  const re = run('nb-warm');
  const { assign } = await rt.nextMessage('assign');
  await finish(rt, assign.run_id, re);
  assert.equal(((await ws.call({ op: 'session_status', session: 'nb-warm' })).status as Msg).state, 'warm');
  rt.slotsTaken([0]);
  await until('the warm worker evicted', async () => {
    const status = (await ws.call({ op: 'session_status', session: 'nb-warm' })).status as Msg;
    return status.state === 'evicted';
  });
  assert.equal((await classes()).warm, 0);
  assert.equal((await classes()).busy, 1, 'a slot another gateway holds is busy to our users');
  // Another session's cell, and this session's next one, wait for the slot rather than being placed on it.
  const other = run('nb-other');
  assert.equal((await ws.next(other)).event, 'queued');
  const next = run('nb-warm');
  assert.equal((await ws.next(next)).event, 'queued');
  await assert.rejects(rt.nextMessage('assign', 300), /no assign/);
  rt.slotsTaken([]);
  const { assign: a1 } = await rt.nextMessage('assign', 2000);
  assert.equal(a1.slot, 0);
  assert.equal((await finish(rt, a1.run_id, other)).ok, true);
  const { assign: a2 } = await rt.nextMessage('assign', 2000);
  assert.equal((await finish(rt, a2.run_id, next)).ok, true);
});
