import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Digest,
  TreeError,
  digestOf,
  formatDigest,
  manifestFilesTree,
  parseManifest,
  parseTreeBytes,
  treeBlobDigests,
} from '../src/index.js';
import { fixtureJson } from './fixtures.js';

interface FilesFixture {
  manifest: unknown;
  blobs: Record<string, string>;
  tree_blobs: string[];
}

const fx = fixtureJson('files-tree.json') as FilesFixture;
const readFrom =
  (blobs: Record<string, string>) =>
  async (ds: Digest[]): Promise<Array<Uint8Array | undefined>> =>
    ds.map((d) => {
      const b = blobs[formatDigest(d)];
      return b === undefined ? undefined : Buffer.from(b, 'base64');
    });

test('the tree Python wrote names exactly the blobs Python lists', async () => {
  const manifest = parseManifest(fx.manifest);
  const root = manifestFilesTree(manifest);
  assert.ok(root);
  const walk = await treeBlobDigests(root, readFrom(fx.blobs));
  assert.ok(walk.ok);
  assert.deepEqual(walk.blobs.map(formatDigest).sort(), [...fx.tree_blobs].sort());
});

test('a missing directory blob ends the walk naming it', async () => {
  const sub = digestOf(Buffer.from('a directory blob nobody stored'));
  const root = Buffer.from(
    JSON.stringify({ kind: 'kernelhop.tree', version: 1, entries: { sub: { type: 'dir', tree: formatDigest(sub) } } }),
  );
  const stored = { [formatDigest(digestOf(root))]: root.toString('base64') };
  const walk = await treeBlobDigests(digestOf(root), readFrom(stored));
  assert.deepEqual(walk, { ok: false, missing: [sub] });
});

test('tree blobs and files refs that break the format are refused', () => {
  const blob = (entries: unknown): Buffer =>
    Buffer.from(JSON.stringify({ kind: 'kernelhop.tree', version: 1, entries }));
  const chunk = `${'ab'.repeat(32)}/10`;
  assert.throws(() => parseTreeBytes(blob({ '..': { type: 'dir', tree: chunk } }), 't'), TreeError);
  assert.throws(() => parseTreeBytes(blob({ 'a/b': { type: 'symlink', target: 'x' } }), 't'), TreeError);
  assert.throws(
    () => parseTreeBytes(blob({ f: { type: 'file', size: 11, chunks: [chunk], executable: false } }), 't'),
    /add up to 10 bytes but size says 11/,
  );
  assert.throws(() => parseTreeBytes(Buffer.from('{"kind":"kernelhop.snapshot"}'), 't'), TreeError);
  const m = fx.manifest as { files: { tree: string; sys_path: string[] } };
  for (const sys_path of [['../up'], ['/abs'], ['']]) {
    assert.throws(() => parseManifest({ ...m, files: { tree: m.files.tree, sys_path } }), /sys_path/);
  }
  assert.throws(() => parseManifest({ ...m, files: { tree: 'nope', sys_path: [] } }), /files.tree/);
});
