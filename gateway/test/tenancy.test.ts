// Tenants and runtimes on one gateway (ARCHITECTURE.md, "Threat model"): runtime tokens, what a runtime may read and
// name in a result, sessions bound to their user, results charged to their user's quota.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startGateway } from '../src/server.js';
import { FakeRuntime, Msg, TOKEN, TestClient, TestGateway, blob, grpcClients, meta, snapshotOf, startTestGateway, unary } from './helpers.js';

let t: TestGateway;
let admin: TestClient;
const users: Record<string, { token: string; ws: TestClient }> = {};
const runtimes: FakeRuntime[] = [];
const clients: Array<ReturnType<typeof grpcClients>> = [];

before(async () => {
  t = await startTestGateway();
  admin = await TestClient.connect(t.gw.wsUrl);
  for (const name of ['ann', 'bob']) {
    const { token } = (await admin.call({ op: 'user_add', name })) as { token: string };
    users[name] = { token, ws: await TestClient.connect(t.gw.wsUrl, token) };
  }
});
afterEach(() => {
  for (const r of runtimes.splice(0)) r.close();
  for (const c of clients.splice(0)) {
    c.cas.close();
    c.runtimes.close();
  }
});
after(async () => {
  admin.close();
  for (const u of Object.values(users)) u.ws.close();
  await t.stop();
});

const pb = (digest: string): { hash: string; size_bytes: number } => {
  const [hash, size] = digest.split('/');
  return { hash, size_bytes: Number(size) };
};

async function runtime(opts: { name?: string; classes?: string[]; capacity?: number; token?: string } = {}): Promise<FakeRuntime> {
  const rt = new FakeRuntime(t.grpcAddress, { name: opts.name ?? 'gpu', classes: opts.classes ?? ['h100'], capacity: opts.capacity ?? 1, token: opts.token });
  runtimes.push(rt);
  await rt.start();
  return rt;
}

/** `user` uploads a one-chunk snapshot holding `text` and returns the chunk's and the manifest's digests. */
async function state(user: string, text: string): Promise<{ chunk: string; snapshot: string }> {
  const chunk = blob(text);
  const snap = snapshotOf([chunk]);
  const put = await users[user].ws.putBlobs([chunk, snap]);
  assert.equal(put.ok, true);
  return { chunk: chunk.digest, snapshot: snap.digest };
}

function run(user: string, snapshot: string, session = 'sess-1'): string {
  const ws = users[user].ws;
  const id = ws.id();
  ws.send({ id, op: 'run', session, gpu_class: 'h100', code: 'x', snapshot, timeout_s: 0 });
  return id;
}

type Read = { responses: Array<{ data: Buffer; status: { code: number; message: string } }> };

test('runtime_token_create/list/revoke are for admins; a revoked token is refused and its runtimes dropped', async () => {
  const refused = await users.ann.ws.call({ op: 'runtime_token_create' });
  assert.deepEqual(refused.error, { code: 'forbidden', message: 'runtime_token_create is for admins' });
  const made = (await admin.call({ op: 'runtime_token_create', gpu_class: 'h100' })) as Msg & { id: string; token: string };
  assert.equal(made.ok, true);
  assert.match(made.token, /^khr_/);
  const listed = (await admin.call({ op: 'runtime_token_list' })).tokens as Array<{ id: string; gpu_class: string | null; revoked_at: number | null }>;
  const entry = listed.find((x) => x.id === made.id);
  assert.deepEqual({ gpu_class: entry?.gpu_class, revoked_at: entry?.revoked_at }, { gpu_class: 'h100', revoked_at: null });
  assert.ok(!JSON.stringify(listed).includes(made.token), 'the list never shows a token');
  const rt = await runtime({ token: made.token });
  const revoked = await admin.call({ op: 'runtime_token_revoke', token_id: made.id });
  assert.deepEqual({ ok: revoked.ok, dropped: revoked.runtimes_dropped }, { ok: true, dropped: 1 });
  await assert.rejects(unary(rt.clients.runtimes, 'Heartbeat', { runtime_id: rt.id }, meta(made.token)), {
    code: grpc.status.UNAUTHENTICATED,
    details: /wrong or revoked token/,
  });
  assert.equal(((await admin.call({ op: 'runtime_token_revoke', token_id: made.id })).error as { code: string }).code, 'not_found');
});

test("the admin's and users' tokens are refused on gRPC with what to use instead", async () => {
  const c = grpcClients(t.grpcAddress);
  clients.push(c);
  const reg = { name: 'rogue', classes: [{ name: 'h100', simulated: true }], capacity: 1, version: 't' };
  await assert.rejects(unary(c.runtimes, 'Register', reg, meta(TOKEN)), {
    code: grpc.status.PERMISSION_DENIED,
    details: /the gateway's admin token is refused on gRPC; runtimes need a runtime token: .*kernelhop runtime-token create/,
  });
  await assert.rejects(unary(c.cas, 'BatchReadBlobs', { digests: [] }, meta(users.bob.token)), {
    code: grpc.status.PERMISSION_DENIED,
    details: /user bob's token is refused on gRPC/,
  });
});

test('a class-bound runtime token registers only that class', async () => {
  const { token } = (await admin.call({ op: 'runtime_token_create', gpu_class: 'a100' })) as { token: string };
  const c = grpcClients(t.grpcAddress);
  clients.push(c);
  const reg = (name: string) => ({ name: 'h', classes: [{ name, simulated: true }], capacity: 1, version: 't' });
  await assert.rejects(unary(c.runtimes, 'Register', reg('h100'), meta(token)), {
    code: grpc.status.PERMISSION_DENIED,
    details: /is for GPU class a100 only; it cannot offer "h100"/,
  });
  const ok = await unary<{ runtime_id: string }>(c.runtimes, 'Register', reg('a100'), meta(token));
  assert.ok(ok.runtime_id.length > 0);
});

test("a runtime reads only the chunks of runs assigned to it; another's runtime id is not its to use", async () => {
  const ann = await state('ann', 'ann state for the assigned runtime');
  const bob = await state('bob', 'bob secret the other runtime must not read');
  const other = (await admin.call({ op: 'runtime_token_create' })) as { token: string };
  const assigned = await runtime({ name: 'assigned' });
  const id = run('ann', ann.snapshot);
  const { assign } = await assigned.nextMessage('assign');
  // A second runtime, with a token of its own, holds no run: it reads nothing, not even what exists.
  const rogue = await runtime({ name: 'rogue', token: other.token });
  const stolen = await rogue.cas<Read>('BatchReadBlobs', { digests: [pb(bob.chunk), pb(ann.chunk)] });
  assert.deepEqual(
    stolen.responses.map((r) => [r.status.code, r.data.length]),
    [
      [grpc.status.PERMISSION_DENIED, 0],
      [grpc.status.PERMISSION_DENIED, 0],
    ],
  );
  assert.match(stolen.responses[0].status.message, /is not part of a run assigned to this runtime/);
  const missing = await rogue.cas<{ missing_blob_digests: unknown[] }>('FindMissingBlobs', { blob_digests: [pb(bob.chunk)] });
  assert.deepEqual(missing.missing_blob_digests, [pb(bob.chunk)], 'stored or not, it is missing to a runtime without a run naming it');
  await assert.rejects(
    rogue.cas('BatchUpdateBlobs', { requests: [{ digest: pb(blob('fill').digest), data: Buffer.from('fill') }] }),
    { code: grpc.status.PERMISSION_DENIED, details: /holds no run/ },
  );
  // Naming the assigned runtime's id with another token gets nothing either.
  await assert.rejects(unary(rogue.clients.cas, 'BatchReadBlobs', { digests: [pb(ann.chunk)] }, meta(other.token, assigned.id)), {
    code: grpc.status.PERMISSION_DENIED,
    details: /is not a runtime registered with this token/,
  });
  // The assigned runtime reads its run's chunks, and not bob's.
  const read = await assigned.cas<Read>('BatchReadBlobs', { digests: [pb(ann.snapshot), pb(ann.chunk), pb(bob.chunk)] });
  assert.deepEqual(
    read.responses.map((r) => r.status.code),
    [grpc.status.OK, grpc.status.OK, grpc.status.PERMISSION_DENIED],
  );
  assigned.event(assign.run_id, { failed: { code: 'worker_died', message: 'done with this test' } });
  await users.ann.ws.untilFinal(id);
  const after = await assigned.cas<Read>('BatchReadBlobs', { digests: [pb(ann.chunk)] });
  assert.equal(after.responses[0].status.code, grpc.status.PERMISSION_DENIED, 'the run is over: its chunks are no longer readable');
});

test("a rogue runtime's Done for another runtime's run is ignored; the assigned runtime's result is relayed", async () => {
  const ann = await state('ann', 'ann state for the rogue done test');
  const assigned = await runtime({ name: 'assigned' });
  const id = run('ann', ann.snapshot);
  const { assign } = await assigned.nextMessage('assign');
  const other = (await admin.call({ op: 'runtime_token_create' })) as { token: string };
  const rogue = await runtime({ name: 'rogue', token: other.token });
  // The rogue knows the run id and a complete snapshot (the run's own input), and sends Done on its stream.
  rogue.event(assign.run_id, { done: { status: 'ok', snapshot: pb(ann.snapshot), timings_json: '{"forged":true}' } });
  await assert.rejects(users.ann.ws.next(id, 300), /no message/, 'nothing reaches the kernel from a runtime not assigned the run');
  assigned.event(assign.run_id, { done: { status: 'ok', snapshot: pb(ann.snapshot), timings_json: '{"run_s":1}' } });
  const { final } = await users.ann.ws.untilFinal(id);
  assert.deepEqual({ ok: final.ok, timings: final.timings }, { ok: true, timings: { run_s: 1 } });
});

test('a result naming blobs its runtime never got nor uploaded is refused, so no user gains holds on them', async () => {
  const bob = await state('bob', 'bob bytes a runtime learned the digest of');
  const ann = await state('ann', 'ann state for the foreign result test');
  const assigned = await runtime({ name: 'assigned' });
  const id = run('ann', ann.snapshot);
  const { assign } = await assigned.nextMessage('assign');
  // A result whose manifest the runtime uploads, but whose chunk is bob's, which it only knows the digest of.
  const forged = snapshotOf([{ digest: bob.chunk, data: Buffer.alloc(pb(bob.chunk).size_bytes) }]);
  const up = await assigned.cas<Read>('BatchUpdateBlobs', { requests: [{ digest: pb(forged.digest), data: forged.data }] });
  assert.equal(up.responses[0].status.code, grpc.status.OK);
  assigned.event(assign.run_id, { done: { status: 'ok', snapshot: pb(forged.digest), timings_json: '' } });
  const { final } = await users.ann.ws.untilFinal(id);
  assert.equal((final.error as { code: string }).code, 'bad_result');
  const got = await users.ann.ws.call({ op: 'get_blobs', digests: [bob.chunk] });
  assert.deepEqual(got.blobs, [{ digest: bob.chunk, code: 'not_found' }]);
});

test('a result may name a blob the runtime was told is present for another run it held, after that run ended', async () => {
  const ann = await state('ann', 'ann first state for the shared chunk test');
  const other = await state('ann', 'ann chunk both results hold');
  const rt = await runtime({ capacity: 2 });
  const first = run('ann', ann.snapshot, 's1');
  const { assign: a1 } = await rt.nextMessage('assign');
  const second = run('ann', other.snapshot, 's2');
  const { assign: a2 } = await rt.nextMessage('assign');
  // Run 1's result holds run 2's chunk: the runtime asks, hears it is present, and does not upload it.
  const fresh = blob('bytes only run 1 made');
  const result = snapshotOf([blob('ann chunk both results hold'), fresh]);
  const asked = await rt.cas<{ missing_blob_digests: unknown[] }>('FindMissingBlobs', {
    blob_digests: [pb(other.chunk), pb(fresh.digest), pb(result.digest)],
  });
  assert.deepEqual(asked.missing_blob_digests, [pb(fresh.digest), pb(result.digest)]);
  await rt.cas('BatchUpdateBlobs', { requests: [fresh, result].map((b) => ({ digest: pb(b.digest), data: b.data })) });
  rt.event(a2.run_id, { failed: { code: 'worker_died', message: 'run 2 ends first' } });
  await users.ann.ws.untilFinal(second);
  rt.event(a1.run_id, { done: { status: 'ok', snapshot: pb(result.digest), timings_json: '' } });
  const { final } = await users.ann.ws.untilFinal(first);
  assert.equal(final.ok, true, JSON.stringify(final));
});

test("a session is bound to its user: the same session name of two users reaches two sessions on the runtime", async () => {
  const ann = await state('ann', 'ann state for the session test');
  const bob = await state('bob', 'bob state for the session test');
  const rt = await runtime({ capacity: 3 });
  const seen: Record<string, string> = {};
  for (const [key, user, snapshot] of [
    ['ann1', 'ann', ann.snapshot],
    ['bob', 'bob', bob.snapshot],
    ['ann2', 'ann', ann.snapshot],
  ] as const) {
    const id = run(user, snapshot, 'the-same-session-name');
    const { assign } = await rt.nextMessage('assign');
    seen[key] = assign.session;
    rt.event(assign.run_id, { failed: { code: 'worker_died', message: 'enough' } });
    await users[user].ws.untilFinal(id);
  }
  assert.equal(seen.ann1, seen.ann2, "ann's second cell goes to her own session's worker");
  assert.notEqual(seen.bob, seen.ann1, "bob naming ann's session gets a session of his own");
  assert.ok(!Object.values(seen).includes('the-same-session-name'), "the runtime never sees the kernel's session name");
});

test("a run's result is charged to its user: past the quota the hop fails with the quota's message", async () => {
  const { token } = (await admin.call({ op: 'user_add', name: 'cam', quota_bytes: 4096 })) as { token: string };
  const cam = await TestClient.connect(t.gw.wsUrl, token);
  try {
    const chunk = blob('cam small state');
    const snap = snapshotOf([chunk]);
    assert.equal((await cam.putBlobs([chunk, snap])).ok, true);
    const rt = await runtime();
    const id = cam.id();
    cam.send({ id, op: 'run', session: 's', gpu_class: 'h100', code: 'big = bytes(8000)', snapshot: snap.digest, timeout_s: 0 });
    const { assign } = await rt.nextMessage('assign');
    const big = blob('b'.repeat(8000));
    const result = snapshotOf([big]);
    await rt.cas('BatchUpdateBlobs', { requests: [big, result].map((b) => ({ digest: pb(b.digest), data: b.data })) });
    rt.event(assign.run_id, { done: { status: 'ok', snapshot: pb(result.digest), timings_json: '' } });
    const { final } = await cam.untilFinal(id);
    assert.equal((final.error as { code: string }).code, 'quota_exceeded');
    assert.match((final.error as { message: string }).message, /the cell's result does not fit: quota exceeded: \d+ of 4096 bytes used, \d+ more asked/);
    const who = await cam.call({ op: 'whoami' });
    assert.ok((who.used_bytes as number) <= 4096, `still within the quota: ${String(who.used_bytes)}`);
  } finally {
    cam.close();
  }
});

test('--runtime-token-file: a runtime token for a runtime on this host, owner-only, kept across restarts while live', async () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kernelhop-rtfile-'));
  const file = path.join(dataDir, 'runtime-token');
  const config = { host: '127.0.0.1', port: 0, grpcPort: 0, dataDir, token: TOKEN, tokenGenerated: false, runtimeTokenFile: file };
  try {
    const first = await startGateway(config, { log: () => undefined });
    const token = readFileSync(file, 'utf8').trim();
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.ok((await first.runtimeTokens.authenticate(token)) !== undefined);
    await first.close();
    const second = await startGateway(config, { log: () => undefined });
    assert.equal(readFileSync(file, 'utf8').trim(), token, 'a live token is kept');
    const [only] = await second.runtimeTokens.list();
    assert.equal((await second.runtimeTokens.list()).length, 1);
    await second.runtimeTokens.revoke(only.id, Date.now());
    await second.close();
    const third = await startGateway(config, { log: () => undefined });
    assert.notEqual(readFileSync(file, 'utf8').trim(), token, 'a revoked one is replaced');
    await third.close();
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
