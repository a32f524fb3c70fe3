// The upload endpoint (POST /ws/v1/blobs) as a client that goes away mid-body sees it: its request holds nothing.
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { after, before, test } from 'node:test';
import { encodeBinary } from '../src/wsApi.js';
import { TOKEN, TestClient, TestGateway, blob, startTestGateway } from './helpers.js';

let t: TestGateway;
before(async () => {
  t = await startTestGateway();
});
after(async () => {
  await t?.stop();
});

function uploadUrl(): URL {
  return new URL(t.gw.wsUrl.replace('ws://', 'http://') + '/blobs');
}

/** A put_blobs body of `blobs`, as the kernel sends it. */
function body(blobs: Array<{ digest: string; data: Buffer }>): Buffer {
  let offset = 0;
  const entries = blobs.map((b) => ({ digest: b.digest, offset: (offset += b.data.length) - b.data.length, length: b.data.length }));
  return encodeBinary({ op: 'put_blobs', blobs: entries }, blobs.map((b) => b.data));
}

function post(data: Buffer): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(uploadUrl(), { method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Length': data.length } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

test("uploads whose client went away mid-body give back the user's turn: the next upload is stored", async () => {
  const whole = body([blob('a blob that never arrives whole')]);
  // More abandoned uploads than a user's requests at once (8): had one kept its turn, the last upload would wait.
  for (let i = 0; i < 12; i++) {
    await new Promise<void>((resolve) => {
      const req = http.request(uploadUrl(), { method: 'POST', headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Length': whole.length } });
      req.on('error', () => resolve());
      req.write(whole.subarray(0, 10), () => {
        req.destroy();
        resolve();
      });
    });
  }
  const b = blob('a blob sent whole after them');
  const stored = await post(body([b]));
  assert.equal(stored.status, 200);
  assert.deepEqual((stored.json.results as Array<{ code: string }>).map((r) => r.code), ['ok']);
  const ws = await TestClient.connect(t.gw.wsUrl);
  assert.deepEqual((await ws.call({ op: 'find_missing', digests: [b.digest] })).missing, []);
  ws.close();
});
