// Property-based fuzzing of what the gateway parses from outside: snapshot records, zstd frames, gRPC messages, and
// a live gateway hit with fuzzed WebSocket frames and ops. Each answer is a value or the module's own error, and
// the gateway keeps serving a well-formed client afterwards.
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { mutated, onlyDomainErrors, params, replacedInside, runsOf } from '@kernelhop/kernel-snapshot/dist/test/fuzzing.js';
import fc from 'fast-check';
import { WebSocket } from 'ws';
import { decodeBlob } from '../src/codecs.js';
import { RecordError, parseRecord, recordBytes, verifyRecord } from '../src/signatures.js';
import { FakeRuntime, Msg, TestClient, TestGateway, binaryFrame, blob, meta, snapshotOf, startTestGateway } from './helpers.js';

let t: TestGateway;
let c: TestClient;
before(async () => {
  t = await startTestGateway();
  const admin = await TestClient.connect(t.gw.wsUrl);
  // Fuzzed as a plain user: an admin's fuzzed ops could remove users or rotate tokens mid-run.
  const { token } = (await admin.call({ op: 'user_add', name: 'fuzzer' })) as { token: string };
  admin.close();
  c = await TestClient.connect(t.gw.wsUrl, token);
});
after(async () => {
  c.close();
  await t.stop();
});

const { publicKey, privateKey } = generateKeyPairSync('ed25519');
const validRecord = {
  kind: 'kernelhop.snapshot-record',
  version: 1,
  manifest: blob('m').digest,
  author: 'fuzzer',
  key: Buffer.from((publicKey.export({ format: 'jwk' }).x as string), 'base64url').toString('base64'),
  parents: [],
  created: '2026-12-01T00:00:00Z',
  message: 'm',
  notebook: null,
  cells: ['x = 1'],
  environment: { python: '3.11.7', packages: { numpy: '1.26.4' } },
};

test('fuzz: parseRecord throws only RecordError, and verifyRecord of what it accepts only answers true or false', () => {
  const signature = sign(null, recordBytes(parseRecord(validRecord)), privateKey).toString('base64');
  assert.equal(verifyRecord(parseRecord(validRecord), signature), true);
  fc.assert(
    fc.property(fc.oneof(fc.jsonValue(), replacedInside(validRecord)), fc.oneof(fc.string(), fc.constant(signature)), (value, sig) => {
      let record;
      try {
        record = parseRecord(value);
      } catch (e) {
        if (e instanceof RecordError) return;
        throw e;
      }
      assert.equal(typeof verifyRecord(record, sig), 'boolean');
    }),
    params,
  );
});

const zstdFixture = JSON.parse(
  readFileSync(path.resolve(__dirname, '../../../kernel-snapshot/fixtures/zstd-blob.json'), 'utf8'),
) as { input_len: number; zstd_base64: string };
const zstdFrame = Buffer.from(zstdFixture.zstd_base64, 'base64');

test('fuzz: decodeBlob of arbitrary and mutated zstd frames yields at most the claimed size, or rejects with an Error', async () => {
  assert.equal((await decodeBlob('zstd', zstdFrame, zstdFixture.input_len)).length, zstdFixture.input_len);
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 256 }), mutated(zstdFrame)), fc.nat({ max: 1 << 20 }), async (frame, size) => {
      try {
        assert.ok((await decodeBlob('zstd', frame, size)).length <= size);
      } catch (e) {
        assert.ok(e instanceof Error, `rejected with ${String(e)}`);
      }
    }),
    runsOf(300),
  );
});

const OPS = [
  'find_missing', 'put_blobs', 'get_blobs', 'classes', 'run', 'cancel', 'whoami', 'key_register', 'snapshot_save',
  'snapshot_get', 'snapshot_list', 'snapshot_log', 'snapshot_rm', 'snapshot_share', 'snapshot_revoke', 'gc',
  'user_add', 'user_token', 'user_quota', 'user_rm', 'user_list', 'runtime_token_create', 'runtime_token_list',
  'runtime_token_revoke',
];
const FIELDS = [
  'blobs', 'code', 'digests', 'expires_s', 'gpu_class', 'grace_s', 'import', 'limit', 'link', 'name', 'public_key',
  'quota_bytes', 'reach', 'record', 'ref', 'run', 'session', 'share', 'signature', 'snapshot', 'timeout_s', 'token_id',
  'with',
];
const aDigest = blob('fuzz').digest;
/** A field's value: arbitrary JSON, or something close to what the op wants (so fuzzing reaches past the checks). */
const fieldValue = fc.oneof(
  fc.jsonValue(),
  fc.constant(aDigest),
  fc.constant([aDigest]),
  fc.constant(validRecord),
  fc.string(),
  fc.array(fc.string(), { maxLength: 3 }),
);
const op = fc.record(
  { op: fc.oneof(fc.constantFrom(...OPS), fc.string()), fields: fc.dictionary(fc.constantFrom(...FIELDS), fieldValue, { maxKeys: 6 }) },
);

/** The `re` the gateway answers a frame with: its JSON header's id when it has a usable one, else null. */
function expectedRe(json: string): unknown {
  try {
    const v = JSON.parse(json) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
    const id = (v as Msg).id;
    return typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id)) ? id : null;
  } catch {
    return null;
  }
}

function binaryRe(frame: Uint8Array): unknown {
  const b = Buffer.from(frame);
  if (b.length < 4 || 4 + b.readUInt32BE(0) > b.length) return null;
  return expectedRe(b.subarray(4, 4 + b.readUInt32BE(0)).toString('utf8'));
}

/** The final answer to a frame: ok, or a clear error of the protocol (never "internal", never silence). */
async function answered(re: unknown): Promise<void> {
  const { final } = await c.untilFinal(re);
  if (final.ok === true) return;
  const error = final.error as { code: string; message: string } | undefined;
  assert.ok(error !== undefined && typeof error.message === 'string' && error.message !== '', JSON.stringify(final));
  assert.notEqual(error.code, 'internal', error.message);
}

let serial = 0;
test('fuzz: a live gateway answers every fuzzed text frame and op with a result or a clear error, and keeps serving', async () => {
  const validText = JSON.stringify({ id: 'seed', op: 'find_missing', digests: [aDigest] });
  const frame = fc.oneof(
    op.map(({ op: o, fields }) => JSON.stringify({ ...fields, op: o, id: `f${serial++}` })),
    fc.string({ maxLength: 200 }),
    mutated(Buffer.from(validText)).map((b) => Buffer.from(b).toString('utf8')),
    fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'),
  );
  await fc.assert(
    fc.asyncProperty(frame, async (text) => {
      c.sendRaw(text, false);
      await answered(expectedRe(text));
    }),
    runsOf(300),
  );
  assert.equal(c.ws.readyState, WebSocket.OPEN);
  const b = blob('still serving');
  assert.equal(((await c.putBlobs([b])).results as Array<{ code: string }>)[0].code, 'ok');
  assert.deepEqual((await c.call({ op: 'find_missing', digests: [b.digest] })).missing, []);
});

test('fuzz: a live gateway answers every fuzzed binary frame (put_blobs) with a result or a clear error', async () => {
  const data = Buffer.from('binary seed');
  const valid = binaryFrame({ id: 'bseed', op: 'put_blobs', blobs: [{ digest: blob('binary seed').digest, offset: 0, length: data.length }] }, [data]);
  const header = fc.record({
    id: fc.constant(0).map(() => `b${serial++}`),
    op: fc.oneof(fc.constant('put_blobs'), fc.constantFrom(...OPS)),
    blobs: fc.oneof(fc.jsonValue(), fc.array(fc.dictionary(fc.constantFrom('digest', 'offset', 'length', 'codec'), fc.oneof(fc.jsonValue(), fc.nat(64), fc.constant('zstd'), fc.constant(aDigest))), { maxLength: 4 })),
  });
  const frame = fc.oneof(
    fc.tuple(header, fc.uint8Array({ maxLength: 64 })).map(([h, payload]) => new Uint8Array(binaryFrame(h, [Buffer.from(payload)]))),
    mutated(valid),
    fc.uint8Array({ maxLength: 64 }),
  );
  await fc.assert(
    fc.asyncProperty(frame, async (bytes) => {
      c.sendRaw(Buffer.from(bytes), true);
      await answered(binaryRe(bytes));
    }),
    runsOf(300),
  );
  assert.equal(c.ws.readyState, WebSocket.OPEN);
  assert.equal((await c.call({ op: 'classes' })).ok, true);
});

test('a text frame that is not UTF-8 closes that socket with 1007 (the WebSocket protocol requires it); others are served', async () => {
  const victim = await TestClient.connect(t.gw.wsUrl);
  const closed = new Promise<number>((resolve) => victim.ws.on('close', (code) => resolve(code)));
  victim.sendRaw(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), false);
  assert.equal(await closed, 1007);
  assert.equal((await c.call({ op: 'classes' })).ok, true);
});

const METHODS = [
  '/kernelhop.v1.ContentAddressableStorage/FindMissingBlobs',
  '/kernelhop.v1.ContentAddressableStorage/BatchUpdateBlobs',
  '/kernelhop.v1.ContentAddressableStorage/BatchReadBlobs',
  '/kernelhop.v1.Runtimes/Heartbeat',
];

test('fuzz: gRPC calls with arbitrary message bytes get a status, never a handler crash or a hang', async () => {
  const raw = new grpc.Client(t.grpcAddress, grpc.credentials.createInsecure());
  const call = (method: string, bytes: Buffer): Promise<grpc.ServiceError | null> =>
    new Promise((resolve) => {
      raw.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, bytes, meta(), { deadline: Date.now() + 5000 }, (e) =>
        resolve(e),
      );
    });
  try {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...METHODS), fc.uint8Array({ maxLength: 128 }), async (method, bytes) => {
        const e = await call(method, Buffer.from(bytes));
        if (e === null) return;
        assert.notEqual(e.code, grpc.status.DEADLINE_EXCEEDED, `${method} hung`);
        assert.doesNotMatch(e.details, /gateway error/, `${method}: the handler failed: ${e.details}`);
      }),
      runsOf(300),
    );
  } finally {
    raw.close();
  }
});

test("fuzz: a run fed a runtime's fuzzed Work events ends with a final reply, and the gateway keeps serving", async () => {
  const rt = new FakeRuntime(t.grpcAddress, { name: 'fuzz-runtime', classes: ['fuzz'], capacity: 1 });
  await rt.start();
  const chunk = blob('fuzzed run state');
  const snap = snapshotOf([chunk]);
  await c.putBlobs([chunk, snap]);
  const [hash, size] = snap.digest.split('/');
  const str = fc.string({ maxLength: 40 });
  const event = fc.oneof(
    fc.record({ started: fc.record({ worker: str, warm: fc.boolean() }) }),
    fc.record({ stream: fc.record({ name: fc.oneof(str, fc.constantFrom('stdout', 'stderr')), text: str }) }),
    fc.record({ display: fc.record({ data_json: fc.oneof(str, fc.jsonValue().map((v) => JSON.stringify(v) ?? '')), metadata_json: str }) }),
    fc.record({ result: fc.record({ data_json: str, metadata_json: str }) }),
    fc.record({ error: fc.record({ ename: str, evalue: str, traceback: fc.array(str, { maxLength: 3 }), etype: str }) }),
    fc.record({ progress: fc.record({ phase: str, done_bytes: fc.nat(), total_bytes: fc.nat() }) }),
  );
  const digest = fc.oneof(fc.record({ hash: str, size_bytes: fc.nat() }), fc.constant({ hash, size_bytes: Number(size) }));
  const ending = fc.oneof(
    fc.record({ done: fc.record({ status: str, snapshot: digest, timings_json: str }) }),
    fc.record({ failed: fc.record({ code: str, message: str }) }),
  );
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(event, { maxLength: 5 }), ending, async (events, end) => {
        const id = c.id();
        c.send({ id, op: 'run', session: 'fuzz', gpu_class: 'fuzz', code: 'x = 1', snapshot: snap.digest });
        const { assign } = await rt.nextMessage('assign');
        for (const ev of events) rt.event(assign.run_id, ev);
        rt.event(assign.run_id, end);
        const { final } = await c.untilFinal(id);
        if (final.ok === true) return;
        const error = final.error as { code: unknown; message: unknown };
        assert.ok(typeof error.code === 'string' && typeof error.message === 'string', JSON.stringify(final));
        assert.doesNotMatch(error.message, /^gateway error/, JSON.stringify(final));
      }),
      runsOf(100),
    );
  } finally {
    rt.close();
  }
  assert.equal((await c.call({ op: 'classes' })).ok, true);
});

test('fuzz: parseRecord of mutated record bytes (that are still JSON) throws only RecordError', () => {
  fc.assert(
    fc.property(mutated(Buffer.from(JSON.stringify(validRecord))), (bytes) => {
      let value: unknown;
      try {
        value = JSON.parse(Buffer.from(bytes).toString('utf8'));
      } catch {
        return;
      }
      onlyDomainErrors(() => parseRecord(value), RecordError);
    }),
    params,
  );
});
