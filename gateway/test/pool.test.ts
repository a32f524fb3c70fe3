// The pool through the real gateway, over real WebSockets and gRPC with fake runtimes: warm sessions on their slots,
// eviction of the worker idle the longest, fair share across users, per-user slot limits, a runtime that dies.
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { FakeRuntime, Msg, TestClient, TestGateway, blob, snapshotOf, startTestGateway } from './helpers.js';

let t: TestGateway;
let admin: TestClient;
const users: Record<string, { ws: TestClient; snapshot: string }> = {};
const runtimes: FakeRuntime[] = [];

before(async () => {
  t = await startTestGateway();
  admin = await TestClient.connect(t.gw.wsUrl);
  for (const name of ['ann', 'bob']) {
    const { token } = (await admin.call({ op: 'user_add', name })) as { token: string };
    const ws = await TestClient.connect(t.gw.wsUrl, token);
    const chunk = blob(`state of ${name}`);
    const snap = snapshotOf([chunk]);
    await ws.putBlobs([chunk, snap]);
    users[name] = { ws, snapshot: snap.digest };
  }
});
afterEach(async () => {
  for (const r of runtimes.splice(0)) r.close();
  await admin.call({ op: 'user_limit', name: 'ann', slots: null });
  // Let the gateway see the fake runtimes go before the next test registers its own.
  await new Promise((r) => setTimeout(r, 100));
});
after(async () => {
  admin.close();
  for (const u of Object.values(users)) u.ws.close();
  await t.stop();
});

async function runtime(name: string, capacity = 1): Promise<FakeRuntime> {
  const rt = new FakeRuntime(t.grpcAddress, { name, classes: ['h100'], capacity });
  runtimes.push(rt);
  await rt.start();
  return rt;
}

function run(user: string, session: string): string {
  const { ws, snapshot } = users[user];
  const id = ws.id();
  ws.send({ id, op: 'run', session, gpu_class: 'h100', code: 'x = 1', snapshot, timeout_s: 0 });
  return id;
}

/** The runtime ends its run with a result: the input snapshot unchanged, so the user holds it already. */
async function finish(user: string, rt: FakeRuntime, runId: string, re: string): Promise<Msg> {
  const [hash, size] = users[user].snapshot.split('/');
  rt.event(runId, { started: { worker: 'w', warm: false } });
  rt.event(runId, { done: { status: 'ok', snapshot: { hash, size_bytes: Number(size) }, timings_json: '{}' } });
  return (await users[user].ws.untilFinal(re)).final;
}

async function status(user: string, session: string): Promise<Msg> {
  return (await users[user].ws.call({ op: 'session_status', session })).status as Msg;
}

test("a session's worker stays warm on its slot; another session's run finding no free slot evicts it at once", async () => {
  const rt = await runtime('rt-1');
  const first = run('ann', 'nb-a');
  const { assign: a1 } = await rt.nextMessage('assign');
  assert.equal(a1.slot, 0);
  assert.equal(a1.warm_grace_s, 60);
  assert.equal((await finish('ann', rt, a1.run_id, first)).ok, true);
  const warm = await status('ann', 'nb-a');
  assert.equal(warm.state, 'warm');
  assert.equal(warm.runtime, 'rt-1');
  assert.ok((warm.warm_s_left as number) > 50 && (warm.warm_s_left as number) <= 60, JSON.stringify(warm));
  const classes = (await admin.call({ op: 'classes' })).classes as Record<string, Msg>;
  assert.equal(classes.h100.warm, 1);

  // Bob's run does not wait out ann's grace: her idle worker is evicted and the slot is his.
  const second = run('bob', 'nb-b');
  const { assign: a2 } = await rt.nextMessage('assign', 2000);
  assert.equal(a2.slot, 0);
  assert.equal((await status('ann', 'nb-a')).state, 'evicted');
  // Her next cell waits for a slot, as any cold one.
  const again = run('ann', 'nb-a');
  const queued = await users.ann.ws.next(again);
  assert.equal(queued.event, 'queued');
  assert.equal(queued.position, 1);
  assert.equal(typeof queued.wait_s, 'number');
  await finish('bob', rt, a2.run_id, second);
  const { assign: a3 } = await rt.nextMessage('assign');
  await finish('ann', rt, a3.run_id, again);
});

test('the warm worker idle the longest is the one evicted; a running one never is', async () => {
  const rt = await runtime('rt-1', 3);
  const older = run('ann', 'idle-longest');
  const { assign: a1 } = await rt.nextMessage('assign');
  await finish('ann', rt, a1.run_id, older);
  const newer = run('ann', 'idle-recently');
  const { assign: a2 } = await rt.nextMessage('assign');
  await finish('ann', rt, a2.run_id, newer);
  const busy = run('ann', 'running');
  const { assign: a3 } = await rt.nextMessage('assign');
  assert.deepEqual([a1.slot, a2.slot, a3.slot].sort(), [0, 1, 2]);
  const bobs = run('bob', 'nb-b');
  const { assign: b } = await rt.nextMessage('assign');
  assert.equal(b.slot, a1.slot, 'the slot of the session idle the longest');
  assert.equal((await status('ann', 'idle-longest')).state, 'evicted');
  assert.equal((await status('ann', 'idle-recently')).state, 'warm');
  assert.equal((await status('ann', 'running')).state, 'running');
  await finish('bob', rt, b.run_id, bobs);
  await finish('ann', rt, a3.run_id, busy);
});

test('fair share: a heavy user queues behind a light one, FIFO within a user', async () => {
  const rt = await runtime('rt-1');
  const heavy = run('ann', 'h1');
  const { assign: a1 } = await rt.nextMessage('assign');
  // Ann holds the GPU a while: her recent GPU-seconds grow past bob's 0.
  await new Promise((r) => setTimeout(r, 300));
  const annNext = run('ann', 'h2');
  const annLast = run('ann', 'h3');
  assert.equal((await users.ann.ws.next(annNext)).position, 1);
  const bobs = run('bob', 'light');
  // Bob asked after both of ann's, yet goes first.
  const bobQueued = await users.bob.ws.next(bobs);
  assert.equal(bobQueued.position, 1, JSON.stringify(bobQueued));
  await finish('ann', rt, a1.run_id, heavy);
  const { assign: next } = await rt.nextMessage('assign');
  // The slot's next run is bob's: only his request ends with it.
  await finish('bob', rt, next.run_id, bobs);
  const { assign: third } = await rt.nextMessage('assign');
  assert.equal((await finish('ann', rt, third.run_id, annNext)).ok, true, "ann's runs keep their order");
  const { assign: fourth } = await rt.nextMessage('assign');
  assert.equal((await finish('ann', rt, fourth.run_id, annLast)).ok, true);
});

test('a per-user slot limit holds a run back while another user takes the free slot', async () => {
  const limit = await admin.call({ op: 'user_limit', name: 'ann', slots: 1 });
  assert.deepEqual({ user: limit.user, slots: limit.slots }, { user: 'ann', slots: 1 });
  const refused = await users.ann.ws.call({ op: 'user_limit', name: 'ann', slots: 5 });
  assert.equal((refused.error as Msg).code, 'forbidden');
  const rt = await runtime('rt-1', 2);
  const one = run('ann', 'l1');
  const { assign: a1 } = await rt.nextMessage('assign');
  const two = run('ann', 'l2');
  assert.equal((await users.ann.ws.next(two)).event, 'queued', 'a slot is free, but ann holds her one');
  const bobs = run('bob', 'b');
  const { assign: b } = await rt.nextMessage('assign');
  await finish('bob', rt, b.run_id, bobs);
  // Ann's first session is warm now; at her limit her second session may trade it for its run.
  await finish('ann', rt, a1.run_id, one);
  const { assign: a2 } = await rt.nextMessage('assign');
  assert.equal(a2.slot, a1.slot, "her own idle worker's slot");
  await finish('ann', rt, a2.run_id, two);
  assert.equal((await status('ann', 'l1')).state, 'evicted');
});

test('a runtime that dies: its running cell fails runtime_lost; its warm session runs next on another runtime', async () => {
  const rt1 = await runtime('rt-1', 2);
  const warm = run('ann', 'w');
  const { assign: a1 } = await rt1.nextMessage('assign');
  await finish('ann', rt1, a1.run_id, warm);
  const running = run('bob', 'r');
  await rt1.nextMessage('assign');
  const rt2 = await runtime('rt-2');
  rt1.crash();
  const lost = (await users.bob.ws.untilFinal(running)).final;
  assert.equal((lost.error as Msg).code, 'runtime_lost');
  const gone = await status('ann', 'w');
  assert.deepEqual({ state: gone.state, runtime: gone.runtime }, { state: 'lost', runtime: 'rt-1' });
  const next = run('ann', 'w');
  const { assign: a2 } = await rt2.nextMessage('assign');
  assert.equal(a2.session, a1.session);
  assert.equal((await finish('ann', rt2, a2.run_id, next)).ok, true);
});
