// Property-based fuzzing of the parsers that read bytes from outside (manifests, tree blobs): whatever they are
// given, they return a value or throw their own error type, never a TypeError, a RangeError or a hang.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ManifestError, TreeError, parseManifest, parseManifestBytes, parseTreeBytes } from '../src/index.js';
import { fixtureBytes, fixtureJson } from './fixtures.js';
import { mutated, onlyDomainErrors, params, replacedInside } from './fuzzing.js';

const manifestBytes = fixtureBytes('manifest-v1.canonical.json');
const manifestValue = fixtureJson('manifest-v1.json');
const treeFixture = fixtureJson('files-tree.json') as { blobs: Record<string, string>; tree_blobs: string[] };
const treeBlob = Buffer.from(treeFixture.blobs[treeFixture.tree_blobs[0]], 'base64');

test('fuzz: parseManifestBytes of arbitrary and mutated bytes returns a manifest or throws ManifestError', () => {
  parseManifestBytes(manifestBytes); // the seed itself is valid
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 512 }), mutated(manifestBytes)), (bytes) =>
      onlyDomainErrors(() => parseManifestBytes(bytes), ManifestError),
    ),
    params,
  );
});

test('fuzz: parseManifest of arbitrary JSON and of valid manifests with one field replaced throws only ManifestError', () => {
  fc.assert(
    fc.property(fc.oneof(fc.jsonValue(), replacedInside(manifestValue)), (value) =>
      onlyDomainErrors(() => parseManifest(value), ManifestError),
    ),
    params,
  );
});

test('fuzz: parseTreeBytes of arbitrary, mutated and field-replaced tree blobs throws only TreeError', () => {
  parseTreeBytes(treeBlob, 'seed');
  const replaced = replacedInside(JSON.parse(treeBlob.toString('utf8'))).map((v) => Buffer.from(JSON.stringify(v) ?? ''));
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 512 }), mutated(treeBlob), replaced), (bytes) =>
      onlyDomainErrors(() => parseTreeBytes(bytes, 'fuzzed'), TreeError),
    ),
    params,
  );
});

test('deeply nested JSON is refused with the parsers own errors, not a stack overflow', () => {
  const deep = Buffer.from(`{"kind":"kernelhop.snapshot","version":1,"groups":[],"meta":${'['.repeat(100_000)}${']'.repeat(100_000)}}`);
  assert.throws(() => parseManifestBytes(deep), ManifestError);
  const deepTree = Buffer.from(`{"kind":"kernelhop.tree","version":1,"entries":{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`);
  assert.throws(() => parseTreeBytes(deepTree, 'deep'), TreeError);
});
