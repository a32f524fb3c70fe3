import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';
import { MAX_GET_BYTES } from '../src/wsApi.js';
import { TestClient, TestGateway, TOKEN, binaryFrame, blob, startTestGateway } from './helpers.js';

let t: TestGateway;
let c: TestClient;
before(async () => {
  t = await startTestGateway();
  c = await TestClient.connect(t.gw.wsUrl);
});
after(async () => {
  c.close();
  await t.stop();
});

function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('open', () => {
      resolve(101);
      ws.close();
    });
    ws.on('error', (e) => {
      if (!/Unexpected server response/.test(e.message)) reject(e);
    });
  });
}

test("gateway.json says where to connect and holds no token; the admin's token is in a file of its own; both owner-only", () => {
  const file = path.join(t.dataDir, 'gateway.json');
  assert.ok(existsSync(file));
  assert.equal(statSync(file).mode & 0o777, 0o600);
  const info = JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
  assert.deepEqual(info, { url: t.gw.wsUrl, grpc: t.gw.grpcAddress });
  const admin = path.join(t.dataDir, 'admin-token');
  assert.equal(statSync(admin).mode & 0o777, 0o600);
  assert.equal(readFileSync(admin, 'utf8').trim(), TOKEN);
});

test('the upgrade is refused with 401 without the right token', async () => {
  assert.equal(await upgradeStatus(t.gw.wsUrl), 401);
  assert.equal(await upgradeStatus(t.gw.wsUrl, { Authorization: 'Bearer wrong' }), 401);
  assert.equal(await upgradeStatus(`${t.gw.wsUrl}?token=wrong`), 401);
  assert.equal(await upgradeStatus(`${t.gw.wsUrl}?token=${TOKEN}`), 101);
  assert.equal(await upgradeStatus(t.gw.wsUrl, { Authorization: `Bearer ${TOKEN}` }), 101);
  assert.equal(await upgradeStatus(t.gw.wsUrl.replace('/ws/v1', '/other'), { Authorization: `Bearer ${TOKEN}` }), 404);
});

test('find_missing, put_blobs, get_blobs round-trip', async () => {
  const a = blob('alpha');
  const b = blob('beta'.repeat(1000));
  const missing = await c.call({ op: 'find_missing', digests: [a.digest, b.digest] });
  assert.deepEqual(missing, { re: missing.re, ok: true, missing: [a.digest, b.digest] });
  const put = await c.putBlobs([a, b]);
  assert.equal(put.ok, true);
  assert.deepEqual(
    (put.results as Array<{ code: string }>).map((r) => r.code),
    ['ok', 'ok'],
  );
  assert.deepEqual((await c.call({ op: 'find_missing', digests: [a.digest, b.digest] })).missing, []);
  const absent = blob('never uploaded');
  const got = await c.call({ op: 'get_blobs', digests: [b.digest, absent.digest, a.digest] });
  assert.equal(got.ok, true);
  const payload = got.payload as Buffer;
  const entries = got.blobs as Array<{ digest: string; offset?: number; length?: number; code?: string }>;
  assert.deepEqual(entries[1], { digest: absent.digest, code: 'not_found' });
  for (const [e, want] of [
    [entries[0], b],
    [entries[2], a],
  ] as const) {
    assert.equal(e.digest, want.digest);
    assert.ok(payload.subarray(e.offset, (e.offset as number) + (e.length as number)).equals(want.data));
  }
});

test('a corrupt blob is refused with digest_mismatch and nothing is stored', async () => {
  const good = blob('good bytes');
  const res = await c.putBlobs([{ digest: good.digest, data: Buffer.from('evil bytes') }]);
  assert.equal(res.ok, true);
  const [r] = res.results as Array<{ digest: string; code: string; message: string }>;
  assert.equal(r.code, 'digest_mismatch');
  assert.match(r.message, /nothing stored/);
  assert.deepEqual((await c.call({ op: 'find_missing', digests: [good.digest] })).missing, [good.digest]);
});

test('a zstd-compressed blob is decoded, verified against the raw digest and stored raw', async () => {
  // The shared fixture: Python's zstandard made the frame, as a kernel would.
  const fx = JSON.parse(readFileSync(path.resolve(__dirname, '../../../kernel-snapshot/fixtures/zstd-blob.json'), 'utf8')) as {
    input_len: number;
    digest: string;
    zstd_base64: string;
  };
  const raw = Buffer.from(Array.from({ length: fx.input_len }, (_, i) => i % 251));
  const frame = Buffer.from(fx.zstd_base64, 'base64');
  assert.ok(frame.length < raw.length);
  const bogus = blob('not what the frame holds');
  const put = await c.putBlobs([
    { digest: fx.digest, data: frame, codec: 'zstd' },
    { digest: bogus.digest, data: Buffer.from('not zstd at all'), codec: 'zstd' },
    { digest: bogus.digest, data: frame, codec: 'zstd' },
  ]);
  const codes = (put.results as Array<{ code: string }>).map((r) => r.code);
  assert.deepEqual(codes.slice(0, 2), ['ok', 'bad_encoding']);
  // A valid frame of other bytes: refused, whether decoding stops at the claimed size or the digest disagrees.
  assert.ok(['bad_encoding', 'digest_mismatch'].includes(codes[2]), codes[2]);
  const got = await c.call({ op: 'get_blobs', digests: [fx.digest] });
  const [entry] = got.blobs as Array<{ offset: number; length: number }>;
  assert.ok((got.payload as Buffer).subarray(entry.offset, entry.offset + entry.length).equals(raw));
  assert.deepEqual((await c.call({ op: 'find_missing', digests: [bogus.digest] })).missing, [bogus.digest]);
  const unknown = await c.putBlobs([{ digest: bogus.digest, data: Buffer.from('x'), codec: 'lz4' }]);
  assert.equal(unknown.ok, false);
  assert.equal((unknown.error as { code: string }).code, 'bad_request');
});

test('malformed frames get bad_request and the socket stays open', async () => {
  const badReply = async (send: () => void, re: unknown): Promise<string> => {
    send();
    const m = await c.next(re);
    assert.equal(m.ok, false);
    const err = m.error as { code: string; message: string };
    assert.equal(err.code, 'bad_request');
    return err.message;
  };
  assert.match(await badReply(() => c.sendRaw('not json', false), null), /not JSON/);
  assert.match(await badReply(() => c.sendRaw('[1,2]', false), null), /JSON object/);
  assert.match(await badReply(() => c.send({ op: 'classes' }), null), /needs "id"/);
  assert.match(await badReply(() => c.send({ id: 'x1', op: 'frobnicate' }), 'x1'), /unknown op "frobnicate"/);
  assert.match(await badReply(() => c.send({ id: 'x2', op: 'find_missing', digests: ['abc/1'] }), 'x2'), /digests\[0\]/);
  assert.match(await badReply(() => c.send({ id: 'x3', op: 'find_missing' }), 'x3'), /must be an array/);
  assert.match(await badReply(() => c.send({ id: 'x4', op: 'put_blobs', blobs: [] }), 'x4'), /binary frame/);
  assert.match(await badReply(() => c.sendRaw(Buffer.from([0, 0]), true), null), /shorter/);
  assert.match(await badReply(() => c.sendRaw(Buffer.from([0, 0, 1, 0, 123]), true), null), /says its JSON header has 256/);
  const b = blob('bounded');
  assert.match(
    await badReply(
      () => c.sendRaw(binaryFrame({ id: 'x5', op: 'put_blobs', blobs: [{ digest: b.digest, offset: 0, length: 99 }] }, [b.data]), true),
      'x5',
    ),
    /must lie within/,
  );
  assert.deepEqual((await c.call({ op: 'find_missing', digests: [b.digest] })).missing, [b.digest]);
  assert.match(await badReply(() => c.send({ id: 'x6', op: 'run', session: 's', gpu_class: 'h100' }), 'x6'), /"code"/);
  assert.equal(c.ws.readyState, WebSocket.OPEN);
  assert.equal((await c.call({ op: 'classes' })).ok, true);
});

test('get_blobs over 48 MiB is refused with too_large', async () => {
  const half = `${'a'.repeat(64)}/${MAX_GET_BYTES / 2}`;
  const over = `${'b'.repeat(64)}/${MAX_GET_BYTES / 2 + 1}`;
  const res = await c.call({ op: 'get_blobs', digests: [half, over] });
  assert.equal(res.ok, false);
  assert.equal((res.error as { code: string }).code, 'too_large');
  assert.match((res.error as { message: string }).message, /split it/);
});

test('plain HTTP says where the WebSocket is', async () => {
  const res = await fetch(t.gw.wsUrl.replace('ws://', 'http://'));
  assert.equal(res.status, 426);
  assert.match(await res.text(), /\/ws\/v1/);
});
