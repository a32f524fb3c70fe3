import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DigestError, blake3Backend, digestOf, formatDigest, makeDigest, parseDigest } from '../src/index.js';
import { fixtureJson } from './fixtures.js';

interface Vector {
  input_len?: number;
  pattern?: string;
  input_utf8?: string;
  hash: string;
  digest: string;
}

function inputOf(v: Vector): Buffer {
  if (v.input_utf8 !== undefined) return Buffer.from(v.input_utf8, 'utf8');
  assert.equal(v.pattern, 'i % 251');
  const b = Buffer.alloc(v.input_len as number);
  for (let i = 0; i < b.length; i++) b[i] = i % 251;
  return b;
}

for (const backend of ['native', 'wasm'] as const) {
  test(`BLAKE3 vectors match the Python reference (${backend})`, () => {
    const { vectors } = fixtureJson('blake3-vectors.json') as { vectors: Vector[] };
    assert.ok(vectors.length >= 12);
    for (const v of vectors) {
      const d = digestOf(inputOf(v), backend);
      assert.equal(d.hash, v.hash, `vector ${JSON.stringify(v.input_utf8 ?? v.input_len)}`);
      assert.equal(formatDigest(d), v.digest);
      assert.deepEqual(parseDigest(v.digest), d);
    }
  });
}

test('digests use the native addon where it has a build, and hash views of a larger buffer exactly', () => {
  // CI runs on linux-x64, which has a build; KERNELHOP_BLAKE3=wasm is the one way to ask for the other.
  assert.equal(blake3Backend(), process.env.KERNELHOP_BLAKE3 === 'wasm' ? 'wasm' : 'native');
  const whole = Buffer.from('0123456789');
  assert.deepEqual(digestOf(whole.subarray(2, 5)), digestOf(Buffer.from('234'), 'wasm'));
});

test('parse and format round-trip', () => {
  const text = `${'ab'.repeat(32)}/1234`;
  assert.deepEqual(parseDigest(text), { hash: 'ab'.repeat(32), sizeBytes: 1234 });
  assert.equal(formatDigest(parseDigest(text)), text);
  assert.equal(parseDigest(`${'0'.repeat(64)}/0`).sizeBytes, 0);
});

test('malformed digests are refused with a reason', () => {
  const h = 'ab'.repeat(32);
  const bad: Array<[unknown, RegExp]> = [
    [42, /must be a string/],
    [null, /must be a string/],
    [h, /no "\/<size>" part/],
    [`${h.slice(2)}/1`, /not 64 lowercase hex/],
    [`${h.toUpperCase()}/1`, /not 64 lowercase hex/],
    [`${h}x/1`, /not 64 lowercase hex/],
    [`${h}/`, /expected a decimal integer/],
    [`${h}/-1`, /expected a decimal integer/],
    [`${h}/01`, /leading zeros/],
    [`${h}/1.5`, /expected a decimal integer/],
    [`${h}/1/2`, /expected a decimal integer/],
    [`${h}/99999999999999999999`, /too large/],
  ];
  for (const [input, message] of bad) {
    assert.throws(() => parseDigest(input), (e: unknown) => e instanceof DigestError && message.test(e.message));
  }
  assert.throws(() => makeDigest(h, -1), DigestError);
  assert.throws(() => makeDigest(h, 1.5), DigestError);
});
