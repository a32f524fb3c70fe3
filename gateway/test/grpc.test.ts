import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { DEFAULT_LIMITS, offer, toProtoNames } from '@kernelhop/proto';
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

// The hello: a runtime states its capabilities in Register and gets the agreement back; one that states none (older
// than the hello) or speaks another protocol is refused saying so, not left to hang.
const helloReg = { name: 'h', classes: [{ name: 'h100', simulated: true }], capacity: 1, version: 't' };

test('Register answers the agreement: the smaller limit of each pair', async () => {
  const mine = toProtoNames(offer([], { maxBatchBytes: 1024 * 1024, maxBlobsInFlight: 2 }));
  const res = await unary<{ capabilities: Record<string, unknown> }>(clients.runtimes, 'Register', { ...helloReg, capabilities: mine });
  assert.equal(res.capabilities.max_batch_bytes, 1024 * 1024);
  assert.equal(res.capabilities.max_blobs_in_flight, 2);
  assert.equal(res.capabilities.max_frame_bytes, DEFAULT_LIMITS.maxFrameBytes);
  assert.equal(res.capabilities.digest_function, 'blake3');
});

test('a runtime without a hello, or of another protocol, is refused with FAILED_PRECONDITION saying why', async () => {
  await assert.rejects(unary(clients.runtimes, 'Register', { ...helloReg, capabilities: null }), {
    code: grpc.status.FAILED_PRECONDITION,
    details: /sent no capabilities \(hello\): it is older than kernelhop\.v1's hello; upgrade it/,
  });
  const other = { ...toProtoNames(offer([])), protocol: 'kernelhop.v2' };
  await assert.rejects(unary(clients.runtimes, 'Register', { ...helloReg, capabilities: other }), {
    code: grpc.status.FAILED_PRECONDITION,
    details: /speaks protocol "kernelhop.v2", this side kernelhop.v1/,
  });
  const sha = { ...toProtoNames(offer([])), digest_function: 'sha256' };
  await assert.rejects(unary(clients.runtimes, 'Register', { ...helloReg, capabilities: sha }), {
    code: grpc.status.FAILED_PRECONDITION,
    details: /names blobs by "sha256", this side by blake3/,
  });
});
