// A gateway on an S3-compatible store (moto, behind the counting proxy). Presigned reads: it signs GET URLs for the
// chunks of runs assigned to the asking runtime, and for nothing else; a gateway on the directory store says it
// cannot. gc: the same Collector sweeps the bucket.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { parseDigest } from '@kernelhop/kernel-snapshot';
import { S3BlobStore } from '../src/stores/s3BlobStore.js';
import { FakeRuntime, TestClient, TestGateway, blob, snapshotOf, startTestGateway } from './helpers.js';
import { S3TestServer, startS3Server } from './s3Server.js';

let s3: S3TestServer;
let onS3: TestGateway;
let onDisk: TestGateway;
before(async () => {
  s3 = await startS3Server();
  await s3.createBucket('presigned');
  onS3 = await startTestGateway({
    blobStore: { kind: 's3', location: { bucket: 'presigned', prefix: 'gw' }, endpoint: s3.endpoint },
  });
  onDisk = await startTestGateway();
});
after(async () => {
  await onS3?.stop();
  await onDisk?.stop();
  await s3?.stop();
});

const pb = (digest: string): { hash: string; size_bytes: number } => {
  const [hash, size] = digest.split('/');
  return { hash: hash as string, size_bytes: Number(size) };
};
type Urls = { responses: Array<{ digest: { hash: string }; url: string; offset: number; status: { code: number; message: string } }> };

async function assignedRun(t: TestGateway, text: string) {
  const ws = await TestClient.connect(t.gw.wsUrl);
  const chunk = blob(text);
  const snap = snapshotOf([chunk]);
  assert.equal((await ws.putBlobs([chunk, snap])).ok, true);
  const rt = new FakeRuntime(t.grpcAddress, { name: 'gpu', classes: ['h100'], capacity: 1, token: t.runtimeToken });
  await rt.start();
  const id = ws.id();
  ws.send({ id, op: 'run', session: 's', gpu_class: 'h100', code: 'x', snapshot: snap.digest, timeout_s: 0 });
  const { assign } = await rt.nextMessage('assign');
  const finish = async (): Promise<void> => {
    rt.event(assign.run_id, { failed: { code: 'worker_died', message: 'done with this test' } });
    await ws.untilFinal(id);
    ws.close();
  };
  return { rt, chunk, snap, finish };
}

test("a runtime gets presigned URLs for its run's blobs only, and the store serves them without the gateway", async () => {
  const { rt, chunk, snap, finish } = await assignedRun(onS3, 'state fetched straight from the store');
  const other = blob('a blob of no run of this runtime');
  const ws = await TestClient.connect(onS3.gw.wsUrl);
  await ws.putBlobs([other]);
  ws.close();
  const urls = await rt.cas<Urls>('GetBlobUrls', { digests: [pb(snap.digest), pb(chunk.digest), pb(other.digest)] });
  assert.deepEqual(urls.responses.map((r) => r.status.code), [grpc.status.OK, grpc.status.OK, grpc.status.PERMISSION_DENIED]);
  assert.equal(urls.responses[2]!.url, '');
  assert.match(urls.responses[2]!.status.message, /is not part of a run assigned to this runtime/);
  const seen = s3.requests.length;
  const got = await Promise.all(urls.responses.slice(0, 2).map(async (r) => Buffer.from(await (await fetch(r.url)).arrayBuffer())));
  assert.deepEqual(got, [snap.data, chunk.data]);
  const gets = s3.requests.slice(seen);
  assert.deepEqual(gets.map((r) => [r.method, r.presigned, r.status]), [['GET', true, 200], ['GET', true, 200]], 'two presigned GETs at the store');
  await finish();
  const after = await rt.cas<Urls>('GetBlobUrls', { digests: [pb(chunk.digest)] });
  assert.equal(after.responses[0]!.status.code, grpc.status.PERMISSION_DENIED, 'the run is over: no more URLs for its chunks');
  rt.close();
});

test('a gateway on the directory store gives file: URLs of its own files, for the runs of the runtime asking only', async () => {
  const { rt, chunk, finish } = await assignedRun(onDisk, 'state on the gateway disk');
  const other = blob('a blob of no run of this runtime');
  const ws = await TestClient.connect(onDisk.gw.wsUrl);
  await ws.putBlobs([other]);
  ws.close();
  const urls = await rt.cas<Urls>('GetBlobUrls', { digests: [pb(chunk.digest), pb(other.digest)] });
  assert.deepEqual(urls.responses.map((r) => r.status.code), [grpc.status.OK, grpc.status.PERMISSION_DENIED]);
  assert.equal(urls.responses[1]!.url, '');
  const file = fileURLToPath(urls.responses[0]!.url);
  const offset = urls.responses[0]!.offset;
  assert.deepEqual(fs.readFileSync(file).subarray(offset, offset + chunk.data.length), chunk.data, 'the blob lies at its offset of the pack');
  // Read-only: nothing that opens it (a runtime beside the gateway) may change a blob.
  assert.equal(fs.statSync(file).mode & 0o777, 0o444);
  await finish();
  rt.close();
});

test('gc on the bucket removes what nothing names or holds, and keeps the snapshot of a run in flight', async () => {
  const raw = new S3Client({ endpoint: s3.motoEndpoint, forcePathStyle: true, region: 'us-east-1' });
  const store = onS3.gw.store as S3BlobStore;
  const stored = (digest: string): Promise<boolean> =>
    raw.send(new HeadObjectCommand({ Bucket: 'presigned', Key: store.keyOf(parseDigest(digest)) })).then(
      () => true,
      () => false,
    );
  const admin = await TestClient.connect(onS3.gw.wsUrl);
  try {
    const orphan = blob('orphan bytes in the bucket');
    assert.equal((await admin.putBlobs([orphan])).ok, true);
    const { rt, chunk, snap, finish } = await assignedRun(onS3, 'the state of a run in flight');
    assert.equal(((await admin.call({ op: 'gc', grace_s: 60 })).report as { blobs_removed: number }).blobs_removed, 0);
    assert.ok(await stored(orphan.digest), 'within the grace nothing goes');
    const report = (await admin.call({ op: 'gc', grace_s: 0 })).report as { blobs_removed: number; bytes_freed: number };
    assert.ok(report.blobs_removed >= 1, JSON.stringify(report));
    assert.equal(await stored(orphan.digest), false, 'the orphan is gone from the bucket');
    assert.ok((await stored(chunk.digest)) && (await stored(snap.digest)), "the run's snapshot stays");
    await finish();
    rt.close();
  } finally {
    admin.close();
    raw.destroy();
  }
});
