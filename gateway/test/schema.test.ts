// What the gateway writes on the WebSocket parses against the schema (proto/kernelhop/v1/gateway.proto), and the
// schema's encoding of it is the wire exactly: a field renamed or retyped on one side only fails here.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fromJson, type JsonObject } from '@bufbuild/protobuf';
import { decodeTagged, encodeTagged, ErrorSchema, file_kernelhop_v1_gateway, RunDoneSchema, RunEventSchema } from '@kernelhop/proto';
import { OPS } from '../src/wsApi.js';
import { FakeRuntime, Msg, TestClient, TestGateway, blob, snapshotOf, startTestGateway } from './helpers.js';

let t: TestGateway;
let c: TestClient;
let rt: FakeRuntime;
let snapshot: string;

before(async () => {
  t = await startTestGateway();
  c = await TestClient.connect(t.gw.wsUrl);
  const chunk = blob('schema state');
  const snap = snapshotOf([chunk]);
  await c.putBlobs([chunk, snap]);
  snapshot = snap.digest;
  rt = new FakeRuntime(t.grpcAddress, { name: 'schema-host', classes: ['h100'], capacity: 1 });
  await rt.start();
});
after(async () => {
  rt.close();
  c.close();
  await t.stop();
});

function withoutRe(m: Msg): JsonObject {
  const { re: _re, ...rest } = m;
  return rest as JsonObject;
}

test("a run's events and its done reply are the schema's RunEvent and RunDone, byte for byte", async () => {
  const id = c.id();
  c.send({ id, op: 'run', session: 's', gpu_class: 'h100', code: 'x = 1', snapshot, timeout_s: 0 });
  const { assign } = await rt.nextMessage('assign');
  const chunk = blob('schema result');
  const result = snapshotOf([chunk]);
  await rt.cas('BatchUpdateBlobs', {
    requests: [chunk, result].map((b) => {
      const [hash, size] = b.digest.split('/');
      return { digest: { hash, size_bytes: Number(size) }, data: b.data };
    }),
  });
  const [hash, size] = result.digest.split('/');
  rt.event(assign.run_id, { started: { worker: 'w1', warm: false } });
  rt.event(assign.run_id, { stream: { name: 'stdout', text: 'hi\n' } });
  rt.event(assign.run_id, { display: { data_json: '{"text/plain":"<Figure>"}', metadata_json: '{}' } });
  rt.event(assign.run_id, { error: { ename: 'ValueError', evalue: 'no', traceback: ['tb'], etype: 'builtins:ValueError' } });
  rt.event(assign.run_id, { progress: { phase: 'upload', done_bytes: 5, total_bytes: 10 } });
  rt.event(assign.run_id, { done: { status: 'error', snapshot: { hash, size_bytes: Number(size) }, timings_json: '{"run_s":0.5}' } });
  const { events, final } = await c.untilFinal(id);
  assert.deepEqual(events.map((e) => e.event), ['started', 'stream', 'display', 'error', 'progress']);
  for (const ev of events) {
    const decoded = decodeTagged(RunEventSchema, 'event', withoutRe(ev));
    assert.deepEqual(encodeTagged(RunEventSchema, 'event', decoded), withoutRe(ev));
  }
  const { ok: _ok, event: _event, ...done } = withoutRe(final) as Record<string, JsonObject[keyof JsonObject]>;
  assert.equal(fromJson(RunDoneSchema, done as JsonObject).snapshot, result.digest);
});

test('missing_blobs is the schema Error, naming every digest the gateway lacks', async () => {
  const lost = [blob('never sent 1'), blob('never sent 2')];
  const snap = snapshotOf(lost);
  await c.putBlobs([snap]);
  const reply = await c.call({ op: 'run', session: 's', gpu_class: 'h100', code: 'x', snapshot: snap.digest, timeout_s: 0 });
  assert.equal(reply.ok, false);
  const error = fromJson(ErrorSchema, reply.error as JsonObject);
  assert.deepEqual([...error.missing].sort(), lost.map((b) => b.digest).sort());
});

test("every op the gateway serves has its request declared in gateway.proto (op snapshot_save: SnapshotSaveRequest)", () => {
  const declared = new Set(file_kernelhop_v1_gateway.messages.map((m) => m.name));
  const request = (op: string): string => op.split('_').map((w) => w[0]?.toUpperCase() + w.slice(1)).join('') + 'Request';
  assert.deepEqual(OPS.filter((op) => !declared.has(request(op))), []);
});
