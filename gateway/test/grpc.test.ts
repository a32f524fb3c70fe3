import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { TestGateway, grpcClients, meta, startTestGateway, unary } from './helpers.js';

let t: TestGateway;
let clients: ReturnType<typeof grpcClients>;
before(async () => {
  t = await startTestGateway();
  clients = grpcClients(t.grpcAddress);
});
after(async () => {
  clients.runtimes.close();
  clients.cas.close();
  await t.stop();
});

test('every gRPC call without the right token is UNAUTHENTICATED', async () => {
  const reg = { name: 'h', classes: [{ name: 'h100', simulated: true }], capacity: 1, version: 't' };
  for (const md of [new grpc.Metadata(), meta('wrong')]) {
    await assert.rejects(unary(clients.runtimes, 'Register', reg, md), { code: grpc.status.UNAUTHENTICATED });
    await assert.rejects(unary(clients.cas, 'FindMissingBlobs', { blob_digests: [] }, md), {
      code: grpc.status.UNAUTHENTICATED,
    });
  }
  const stream = clients.runtimes.Work(meta('wrong', 'whatever'));
  const err = await new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
  assert.equal(err.code, grpc.status.UNAUTHENTICATED);
});

test('Register validates, Heartbeat knows, Work refuses an unknown runtime', async () => {
  await assert.rejects(unary(clients.runtimes, 'Register', { name: 'h', classes: [], capacity: 1, version: 't' }), {
    code: grpc.status.INVALID_ARGUMENT,
  });
  const res = await unary<{ runtime_id: string; heartbeat_interval_ms: number }>(clients.runtimes, 'Register', {
    name: 'h',
    classes: [{ name: 'h100', simulated: false }],
    capacity: 2,
    version: 't',
  });
  assert.ok(res.runtime_id.length > 0);
  assert.equal(res.heartbeat_interval_ms, 200);
  assert.deepEqual(await unary(clients.runtimes, 'Heartbeat', { runtime_id: res.runtime_id }), { known: true });
  assert.deepEqual(await unary(clients.runtimes, 'Heartbeat', { runtime_id: 'nope' }), { known: false });
  const stream = clients.runtimes.Work(meta(undefined, 'nope'));
  const err = await new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
  assert.equal(err.code, grpc.status.NOT_FOUND);
  assert.match(err.details, /Register again/);
});
