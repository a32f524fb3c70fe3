import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { formatDigest } from '@kernelhop/kernel-snapshot';
import { FakeRuntime, Msg, TestClient, TestGateway, blob, snapshotOf, startTestGateway } from './helpers.js';

let t: TestGateway;
let c: TestClient;
const runtimes: FakeRuntime[] = [];
let snapshot: string;

before(async () => {
  t = await startTestGateway();
  c = await TestClient.connect(t.gw.wsUrl);
  const chunk = blob('state bytes');
  const snap = snapshotOf([chunk]);
  await c.putBlobs([chunk, snap]);
  snapshot = snap.digest;
});
afterEach(() => {
  for (const r of runtimes.splice(0)) r.close();
});
after(async () => {
  c.close();
  await t.stop();
});

async function runtime(name: string, classes = ['h100'], capacity = 1): Promise<FakeRuntime> {
  const rt = new FakeRuntime(t.grpcAddress, { name, classes, capacity });
  runtimes.push(rt);
  await rt.start();
  return rt;
}

function pbDigestOf(text: string): { hash: string; size_bytes: number } {
  const [hash, size] = text.split('/');
  return { hash, size_bytes: Number(size) };
}

function run(extra: Msg = {}): string {
  const id = c.id();
  c.send({ id, op: 'run', session: 'sess-1', gpu_class: 'h100', code: 'x = 1', snapshot, timeout_s: 0, ...extra });
  return id;
}

/**
 * Reads `re`'s queued events until one names `position`. A later run whose check finishes first is
 * told a place, then moves back when an earlier run joins the line ahead of it.
 */
async function queuedAt(re: string, position: number): Promise<void> {
  for (;;) {
    const ev = await c.next(re);
    assert.equal(ev.event, 'queued', `expected run ${re} queued at ${position}, got ${JSON.stringify(ev)}`);
    if (ev.position === position) return;
  }
}

/** Uploads a fresh result snapshot as runtime `rt` does before Done (it must hold a run), and returns its digest. */
async function uploadResult(rt: FakeRuntime, text: string): Promise<{ hash: string; size_bytes: number; text: string }> {
  const chunk = blob(text);
  const snap = snapshotOf([chunk]);
  const up = await rt.cas<{ responses: Array<{ status: { code: number } }> }>('BatchUpdateBlobs', {
    requests: [chunk, snap].map((b) => ({ digest: pbDigestOf(b.digest), data: b.data })),
  });
  assert.deepEqual(up.responses.map((r) => r.status.code), [0, 0]);
  const [hash, size] = snap.digest.split('/');
  return { hash, size_bytes: Number(size), text: snap.digest };
}

test('a run reaches the runtime and its events come back in order, then done', async () => {
  const rt = await runtime('gpu-host-1');
  const id = run({ code: 'print("hi")' });
  const { assign } = await rt.nextMessage('assign');
  assert.equal(assign.code, 'print("hi")');
  assert.match(assign.session, /^[0-9a-f]{32}$/, "the runtime sees a session bound to the user, not the kernel's name");
  assert.equal(assign.gpu_class, 'h100');
  assert.equal(`${assign.snapshot.hash}/${assign.snapshot.size_bytes}`, snapshot);
  assert.equal(assign.lazy, false, 'no reach: the runtime restores the whole snapshot');
  const result = await uploadResult(rt, 'new state');
  rt.event(assign.run_id, { started: { worker: 'w1', warm: true } });
  rt.event(assign.run_id, { stream: { name: 'stdout', text: 'hi\n' } });
  rt.event(assign.run_id, { display: { data_json: '{"text/plain":"<Figure>"}', metadata_json: '{}' } });
  rt.event(assign.run_id, { progress: { phase: 'upload', done_bytes: 5, total_bytes: 10 } });
  rt.event(assign.run_id, { result: { data_json: '{"text/plain":"42"}', metadata_json: '' } });
  rt.event(assign.run_id, {
    done: { status: 'ok', snapshot: { hash: result.hash, size_bytes: result.size_bytes }, timings_json: '{"run_s":0.5}' },
  });
  const { events, final } = await c.untilFinal(id);
  assert.deepEqual(events, [
    { re: id, event: 'started', runtime: 'gpu-host-1', worker: 'w1', warm: true, gpu_class: 'h100', simulated: true },
    { re: id, event: 'stream', name: 'stdout', text: 'hi\n' },
    { re: id, event: 'display', data: { 'text/plain': '<Figure>' }, metadata: {} },
    { re: id, event: 'progress', phase: 'upload', done_bytes: 5, total_bytes: 10 },
    { re: id, event: 'result', data: { 'text/plain': '42' }, metadata: {} },
  ]);
  assert.deepEqual(final, { re: id, ok: true, event: 'done', status: 'ok', snapshot: result.text, timings: { run_s: 0.5 } });
  const record = await t.gw.metadata.getRun(assign.run_id);
  assert.equal(record?.status, 'done');
  assert.equal(record?.resultSnapshot, result.text);
});

test('a Done whose snapshot is not in the store is not relayed as done', async () => {
  const rt = await runtime('gpu-host-1');
  const id = run();
  const { assign } = await rt.nextMessage('assign');
  rt.event(assign.run_id, { done: { status: 'ok', snapshot: { hash: 'c'.repeat(64), size_bytes: 10 }, timings_json: '' } });
  const { final } = await c.untilFinal(id);
  assert.equal(final.ok, false);
  assert.equal((final.error as { code: string }).code, 'missing_blobs');
});

test("a run's reach goes to the runtime as a lazy assignment; a reach that is not a list of names is refused", async () => {
  const rt = await runtime('gpu-host-1');
  const id = run({ reach: ['model', 'data'] });
  const { assign } = await rt.nextMessage('assign');
  assert.equal(assign.lazy, true);
  assert.deepEqual(assign.reach, ['model', 'data']);
  rt.event(assign.run_id, { failed: { code: 'worker_died', message: 'ends the run' } });
  await c.untilFinal(id);
  for (const reach of ['model', [1, 2], { model: true }]) {
    const { final } = await c.untilFinal(run({ reach }));
    const error = final.error as { code: string; message: string };
    assert.equal(error.code, 'bad_request');
    assert.match(error.message, /reach must be a list of the names/);
  }
});

test('a run for a class nobody offers fails at once, listing the classes there are', async () => {
  await runtime('gpu-host-1', ['h100', 'cpu']);
  const id = run({ gpu_class: 'a100' });
  const { events, final } = await c.untilFinal(id, 1000);
  assert.deepEqual(events, []);
  const error = final.error as { code: string; message: string };
  assert.equal(error.code, 'unknown_class');
  assert.match(error.message, /"a100"; available now: h100 \(1 runtime, simulated\), cpu \(1 runtime, simulated\)/);
});

test('a run whose snapshot is incomplete fails with missing_blobs', async () => {
  await runtime('gpu-host-1');
  const lost = blob('never uploaded chunk');
  const snap = snapshotOf([lost]);
  await c.putBlobs([snap]);
  const id = run({ snapshot: snap.digest });
  const { final } = await c.untilFinal(id);
  const error = final.error as { code: string; message: string };
  assert.equal(error.code, 'missing_blobs');
  assert.ok(error.message.includes(lost.digest));
});

test('runs queue FIFO when capacity is full and start as slots free', async () => {
  const rt = await runtime('gpu-host-1');
  const first = run();
  const { assign: a1 } = await rt.nextMessage('assign');
  const second = run();
  const third = run();
  await queuedAt(second, 1);
  await queuedAt(third, 2);
  const classes = (await c.call({ op: 'classes' })).classes as Record<string, { busy: number; queued: number; capacity: number }>;
  assert.deepEqual(
    { busy: classes.h100.busy, queued: classes.h100.queued, capacity: classes.h100.capacity },
    { busy: 1, queued: 2, capacity: 1 },
  );
  rt.event(a1.run_id, { failed: { code: 'worker_died', message: 'worker exited with signal 9' } });
  const f1 = await c.untilFinal(first);
  assert.deepEqual(f1.final.error, { code: 'worker_died', message: 'worker exited with signal 9' });
  const { assign: a2 } = await rt.nextMessage('assign');
  const moved = await c.next(third);
  // The wait estimate: the busy slot's expected release (docs/ARCHITECTURE.md, "Scheduling").
  assert.equal(typeof moved.wait_s, 'number');
  delete moved.wait_s;
  assert.deepEqual(moved, { re: third, event: 'queued', position: 1 });
  // The second request was assigned: the third still waits.
  const result = await uploadResult(rt, 'after second');
  rt.event(a2.run_id, { done: { status: 'error', snapshot: { hash: result.hash, size_bytes: result.size_bytes }, timings_json: '{}' } });
  const f2 = await c.untilFinal(second);
  assert.equal(f2.final.status, 'error');
  const { assign: a3 } = await rt.nextMessage('assign');
  rt.event(a3.run_id, { failed: { code: 'restore_failed', message: 'x' } });
  assert.equal(((await c.untilFinal(third)).final.error as { code: string }).code, 'restore_failed');
});

test('a run keeps its place in the queue though a later run is checked sooner', async () => {
  const rt = await runtime('gpu-host-1');
  const first = run();
  const { assign } = await rt.nextMessage('assign');
  const slow = snapshotOf([blob('slow to check')]);
  await c.putBlobs([blob('slow to check'), slow]);
  // Reading the second run's manifest is made slow, so the third run's checks finish first.
  const store = t.gw.store;
  const get = store.get.bind(store);
  store.get = async (digest) => {
    if (formatDigest(digest) === slow.digest) await new Promise((resolve) => setTimeout(resolve, 300));
    return get(digest);
  };
  const second = run({ snapshot: slow.digest });
  const third = run();
  try {
    await queuedAt(second, 1);
    await queuedAt(third, 2);
  } finally {
    store.get = get;
  }
  rt.event(assign.run_id, { failed: { code: 'worker_died', message: 'x' } });
  await c.untilFinal(first);
  const { assign: next } = await rt.nextMessage('assign');
  assert.equal(`${next.snapshot.hash}/${next.snapshot.size_bytes}`, slow.digest);
  rt.event(next.run_id, { failed: { code: 'worker_died', message: 'x' } });
  await c.untilFinal(second);
  const { assign: last } = await rt.nextMessage('assign');
  rt.event(last.run_id, { failed: { code: 'worker_died', message: 'x' } });
  await c.untilFinal(third);
});

test('a runtime whose stream closes mid-run fails the run with runtime_lost', async () => {
  const rt = await runtime('gpu-host-7');
  const id = run();
  const { assign } = await rt.nextMessage('assign');
  rt.event(assign.run_id, { started: { worker: 'w', warm: false } });
  assert.equal((await c.next(id)).event, 'started');
  rt.crash();
  const { final } = await c.untilFinal(id);
  assert.deepEqual(final.error, {
    code: 'runtime_lost',
    message: 'runtime gpu-host-7 stopped while running the cell; your local state is unchanged',
  });
});

test('a runtime that misses heartbeats is dropped', async () => {
  const rt = await runtime('gpu-host-8');
  const id = run();
  await rt.nextMessage('assign');
  rt.stopHeartbeats();
  const { final } = await c.untilFinal(id, 3000);
  assert.equal((final.error as { code: string }).code, 'runtime_lost');
  assert.deepEqual((await c.call({ op: 'classes' })).classes, {});
});

test('cancel is forwarded to the runtime; a queued run is just removed', async () => {
  const rt = await runtime('gpu-host-1');
  const running = run();
  const { assign } = await rt.nextMessage('assign');
  const waiting = run();
  assert.equal((await c.next(waiting)).event, 'queued');

  const cancelWaiting = await c.call({ op: 'cancel', run: waiting });
  assert.equal(cancelWaiting.ok, true);
  assert.equal(((await c.untilFinal(waiting)).final.error as { code: string }).code, 'cancelled');

  assert.equal((await c.call({ op: 'cancel', run: running })).ok, true);
  const { cancel } = await rt.nextMessage('cancel');
  assert.equal(cancel.run_id, assign.run_id);
  rt.event(assign.run_id, { failed: { code: 'cancelled', message: 'interrupted by the user' } });
  const { final } = await c.untilFinal(running);
  assert.deepEqual(final.error, { code: 'cancelled', message: 'interrupted by the user' });
  assert.equal(rt.received.filter((m) => m.kind === 'assign').length, 0, 'the cancelled queued run never reached the runtime');
});

test('timeout_s sends Cancel and fails the run with timeout', async () => {
  const rt = await runtime('gpu-host-1');
  const id = run({ timeout_s: 0.3 });
  const { assign } = await rt.nextMessage('assign');
  assert.equal(assign.timeout_s, 0.3);
  const { cancel } = await rt.nextMessage('cancel');
  assert.equal(cancel.run_id, assign.run_id);
  assert.equal(cancel.reason, 'timeout');
  const { final } = await c.untilFinal(id);
  assert.equal((final.error as { code: string }).code, 'timeout');
});

test('a kernel that disconnects cancels its running cells', async () => {
  const rt = await runtime('gpu-host-1');
  const other = await TestClient.connect(t.gw.wsUrl);
  other.send({ id: 1, op: 'run', session: 's2', gpu_class: 'h100', code: 'loop()', snapshot, timeout_s: 0 });
  const { assign } = await rt.nextMessage('assign');
  other.close();
  const { cancel } = await rt.nextMessage('cancel');
  assert.equal(cancel.run_id, assign.run_id);
  rt.event(assign.run_id, { failed: { code: 'cancelled', message: 'x' } });
});
