import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CanonicalJsonError,
  ManifestError,
  canonicalJson,
  compareCodePoints,
  digestOf,
  encodeCanonical,
  encodeManifest,
  formatDigest,
  manifestBlobDigests,
  manifestDigest,
  parseDigest,
  parseManifest,
  parseManifestBytes,
  reachedBlobDigests,
} from '../src/index.js';
import { fixtureBytes, fixtureJson } from './fixtures.js';

test('canonical encoding equals the Python bytes of the fixture', () => {
  const manifest = parseManifest(fixtureJson('manifest-v1.json'));
  const expected = fixtureBytes('manifest-v1.canonical.json');
  assert.equal(encodeManifest(manifest).toString('utf8'), expected.toString('utf8'));
  assert.ok(encodeManifest(manifest).equals(expected));
  const digest = fixtureBytes('manifest-v1.digest').toString('utf8').trim();
  assert.equal(formatDigest(manifestDigest(manifest)), digest);
  assert.equal(formatDigest(digestOf(expected)), digest);
});

test('canonical bytes parse back to a manifest that encodes identically', () => {
  const bytes = fixtureBytes('manifest-v1.canonical.json');
  assert.ok(encodeManifest(parseManifestBytes(bytes)).equals(bytes));
});

test('manifestBlobDigests lists every chunk once', () => {
  const manifest = parseManifest(fixtureJson('manifest-v1.json'));
  const { chunks } = fixtureJson('manifest-v1.chunks.json') as { chunks: Array<{ digest: string }> };
  const listed = manifestBlobDigests(manifest).map(formatDigest);
  assert.deepEqual([...listed].sort(), chunks.map((c) => c.digest).sort());
  assert.equal(new Set(listed).size, listed.length);
  assert.deepEqual(parseDigest(listed[0]), manifestBlobDigests(manifest)[0]);
});

test('reachedBlobDigests lists the chunks of the groups holding a reached name, and only those', () => {
  const manifest = parseManifest(fixtureJson('manifest-v1.json'));
  const group = manifest.groups[0];
  assert.ok(group && manifest.groups.length > 1);
  const own = new Set([...group.pickle.chunks, ...group.buffers.flatMap((b) => b.chunks)]);
  const reached = reachedBlobDigests(manifest, new Set([group.names[0] as string, 'not_in_the_snapshot']));
  assert.deepEqual(new Set(reached.map(formatDigest)), own);
  assert.deepEqual(reachedBlobDigests(manifest, new Set()), []);
  const all = new Set(manifest.groups.flatMap((g) => g.names));
  assert.deepEqual(reachedBlobDigests(manifest, all), manifestBlobDigests(manifest));
});

test('every invalid fixture manifest is refused', () => {
  const { cases } = fixtureJson('manifest-invalid.json') as { cases: Array<{ why: string; manifest: unknown }> };
  assert.ok(cases.length >= 10);
  for (const c of cases) {
    assert.throws(() => parseManifest(c.manifest), ManifestError, c.why);
  }
});

test('manifest errors name the place and the problem', () => {
  const m = fixtureJson('manifest-v1.json') as { groups: Array<{ pickle: { chunks: string[] } }> };
  m.groups[0].pickle.chunks[0] = 'nope/1';
  assert.throws(() => parseManifest(m), /manifest\.groups\[0\]\.pickle\.chunks\[0\]: digest hash "nope"/);
  assert.throws(() => parseManifest({ kind: 'kernelhop.snapshot', version: 7, groups: [] }), /reads version 1 only/);
  assert.throws(() => parseManifestBytes(Buffer.from('{"kind":')), /not JSON/);
  assert.throws(() => parseManifestBytes(Buffer.from([0xff, 0xfe])), /not valid UTF-8/);
});

test('minimal manifest without unpicklable and meta is valid', () => {
  const m = parseManifest({ kind: 'kernelhop.snapshot', version: 1, groups: [] });
  assert.deepEqual(manifestBlobDigests(m), []);
  assert.equal(encodeManifest(m).toString(), '{"groups":[],"kind":"kernelhop.snapshot","version":1}');
});

test('canonical JSON matches Python for escapes, key order and integers', () => {
  // Expected strings are what json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False) gives.
  assert.equal(canonicalJson({ b: 1, a: [true, false, null] }), '{"a":[true,false,null],"b":1}');
  assert.equal(canonicalJson('\u0000\u001f\u007f\b\f\n\r\t"\\/é\u2028'), '"\\u0000\\u001f\u007f\\b\\f\\n\\r\\t\\"\\\\/é\u2028"');
  assert.equal(canonicalJson({ '\u{1F600}': 1, '\uFB01': 2 }), '{"\uFB01":2,"\u{1F600}":1}');
  assert.equal(canonicalJson(-0), '0');
  assert.equal(canonicalJson(-12), '-12');
  assert.equal(canonicalJson({}), '{}');
  assert.equal(canonicalJson([]), '[]');
  assert.ok(encodeCanonical('é').equals(Buffer.from([0x22, 0xc3, 0xa9, 0x22])));
  assert.throws(() => canonicalJson(1.5), CanonicalJsonError);
  assert.throws(() => canonicalJson(2 ** 60), CanonicalJsonError);
  assert.throws(() => canonicalJson('\uD800'), /lone UTF-16 surrogate/);
  assert.throws(() => canonicalJson({ a: undefined }), CanonicalJsonError);
  assert.ok(compareCodePoints('\u{1F600}', '\uFB01') > 0);
  assert.ok(compareCodePoints('a', 'ab') < 0);
  assert.equal(compareCodePoints('x', 'x'), 0);
});
