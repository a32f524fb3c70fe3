// The hello of the gRPC link: a runtime states its capabilities in Register and gets the agreement back; one that
// states none (older than the hello) or speaks another protocol is refused saying so, not left to hang.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { DEFAULT_LIMITS, offer, toProtoNames } from '@kernelhop/proto';
import { grpcClients, startTestGateway, TestGateway, unary } from './helpers.js';

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

const reg = { name: 'h', classes: [{ name: 'h100', simulated: true }], capacity: 1, version: 't' };

test('Register answers the agreement: the smaller limit of each pair', async () => {
  const mine = toProtoNames(offer([], { maxBatchBytes: 1024 * 1024, maxBlobsInFlight: 2 }));
  const res = await unary<{ capabilities: Record<string, unknown> }>(clients.runtimes, 'Register', { ...reg, capabilities: mine });
  assert.equal(res.capabilities.max_batch_bytes, 1024 * 1024);
  assert.equal(res.capabilities.max_blobs_in_flight, 2);
  assert.equal(res.capabilities.max_frame_bytes, DEFAULT_LIMITS.maxFrameBytes);
  assert.equal(res.capabilities.digest_function, 'blake3');
});

test('a runtime without a hello, or of another protocol, is refused with FAILED_PRECONDITION saying why', async () => {
  await assert.rejects(unary(clients.runtimes, 'Register', { ...reg, capabilities: null }), {
    code: grpc.status.FAILED_PRECONDITION,
    details: /sent no capabilities \(hello\): it is older than kernelhop\.v1's hello; upgrade it/,
  });
  const other = { ...toProtoNames(offer([])), protocol: 'kernelhop.v2' };
  await assert.rejects(unary(clients.runtimes, 'Register', { ...reg, capabilities: other }), {
    code: grpc.status.FAILED_PRECONDITION,
    details: /speaks protocol "kernelhop.v2", this side kernelhop.v1/,
  });
  const sha = { ...toProtoNames(offer([])), digest_function: 'sha256' };
  await assert.rejects(unary(clients.runtimes, 'Register', { ...reg, capabilities: sha }), {
    code: grpc.status.FAILED_PRECONDITION,
    details: /names blobs by "sha256", this side by blake3/,
  });
});
