// Property-based fuzzing of the parsers that read bytes from outside (manifests, tree blobs): whatever they are
// given, they return a value or throw their own error type, never a TypeError, a RangeError or a hang.
// KERNELHOP_FUZZ_SECONDS (benchmarks/fuzz.py) runs each property for that long instead of a bounded number of runs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ManifestError, TreeError, parseManifest, parseManifestBytes, parseTreeBytes } from '../src/index.js';
import { fixtureBytes, fixtureJson } from './fixtures.js';

const seconds = Number(process.env.KERNELHOP_FUZZ_SECONDS ?? 0);
const params: fc.Parameters<unknown> =
  seconds > 0 ? { numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: seconds * 1000 } : { numRuns: 2000 };

/** Runs `parse`; passes when it returns or throws `domain`, fails on any other exception. */
function onlyDomainErrors(parse: () => unknown, domain: new (...a: never[]) => Error): void {
  try {
    parse();
  } catch (e) {
    if (!(e instanceof domain)) throw new Error(`threw ${String(e)} instead of a ${domain.name}`, { cause: e });
  }
}

/** Valid bytes with a few bytes flipped, inserted, dropped, or cut short. */
function mutated(valid: Uint8Array): fc.Arbitrary<Uint8Array> {
  const edit = fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 8 }) }),
    fc.record({ kind: fc.constant('drop' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
    fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  );
  return fc.array(edit, { minLength: 1, maxLength: 4 }).map((edits) => {
    let b = Buffer.from(valid);
    for (const e of edits) {
      const at = e.at % (b.length + 1);
      if (e.kind === 'flip' && b.length > 0) b[at % b.length] = e.byte;
      else if (e.kind === 'insert') b = Buffer.concat([b.subarray(0, at), e.bytes, b.subarray(at)]);
      else if (e.kind === 'drop') b = Buffer.concat([b.subarray(0, at), b.subarray(at + e.n)]);
      else if (e.kind === 'cut') b = b.subarray(0, at);
    }
    return b;
  });
}

/** A valid JSON value with one value somewhere inside it replaced by an arbitrary JSON value. */
function replacedInside(valid: unknown): fc.Arbitrary<unknown> {
  return fc.tuple(fc.nat(), fc.jsonValue()).map(([pick, replacement]) => {
    const copy = structuredClone(valid);
    const slots: Array<[Record<string, unknown>, string]> = [];
    const visit = (v: unknown): void => {
      if (typeof v !== 'object' || v === null) return;
      for (const k of Object.keys(v)) {
        slots.push([v as Record<string, unknown>, k]);
        visit((v as Record<string, unknown>)[k]);
      }
    };
    visit(copy);
    if (slots.length === 0) return replacement;
    const [holder, key] = slots[pick % slots.length];
    holder[key] = replacement;
    return copy;
  });
}

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
