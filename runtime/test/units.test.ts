// Small units: device names → classes, options, the cache's adoption of a file.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { digestOf } from '@kernelhop/kernel-snapshot';
import { ChunkCache } from '../src/chunkCache.js';
import { ConfigError, parseArgs, pipSourceOptions } from '../src/config.js';
import { classOfDeviceName, resolveClasses } from '../src/gpuClasses.js';
import { tempDir } from './helpers.js';

test('nvidia-smi device names map to class names', () => {
  assert.equal(classOfDeviceName('NVIDIA H100 80GB HBM3'), 'h100');
  assert.equal(classOfDeviceName('NVIDIA A100-SXM4-80GB'), 'a100');
  assert.equal(classOfDeviceName('NVIDIA L4'), 'l4');
  assert.equal(classOfDeviceName('Tesla T4'), 't4');
  assert.equal(classOfDeviceName('NVIDIA H200'), 'h200');
  assert.equal(classOfDeviceName('NVIDIA GeForce RTX 4090'), 'rtx4090');
});

test('classes: detected, cpu without devices, overrides simulated only when absent', () => {
  assert.deepEqual(resolveClasses([], []), [{ name: 'cpu', simulated: false }]);
  assert.deepEqual(resolveClasses([], ['NVIDIA H100 80GB HBM3', 'NVIDIA H100 80GB HBM3']), [{ name: 'h100', simulated: false }]);
  assert.deepEqual(resolveClasses(['h100', 'a100'], ['NVIDIA H100 80GB HBM3']), [
    { name: 'h100', simulated: false },
    { name: 'a100', simulated: true },
  ]);
  assert.deepEqual(resolveClasses(['cpu'], []), [{ name: 'cpu', simulated: false }]);
});

test('options: defaults, repeats, and errors that name the option', () => {
  const c = parseArgs(['--gateway', 'localhost:8732', '--class', 'H100', '--class', 'h100', '--class', 'l4'], {
    KERNELHOP_HOME: '/tmp/kh',
    KERNELHOP_PYTHON: '/opt/py',
  });
  assert.deepEqual(c.classOverrides, ['h100', 'l4']);
  assert.equal(c.cache, '/tmp/kh/runtime-cache');
  assert.equal(c.python, '/opt/py');
  assert.equal(c.warm, 1);
  assert.equal(c.capacity, 1);
  assert.equal(c.sessionGraceS, 60);
  assert.equal(parseArgs(['--gateway', 'h:1'], {}).python, 'python3');
  assert.throws(() => parseArgs([], {}), (e: Error) => e instanceof ConfigError && /--gateway URL\|HOST:PORT is required/.test(e.message));
  assert.throws(() => parseArgs(['--gateway', 'nohost'], {}), /expected the URL the gateway prints .* or HOST:PORT/);
  assert.throws(() => parseArgs(['--gateway', 'http://h:8731'], {}), /expected the URL the gateway prints/);
  for (const gateway of ['ws://127.0.0.1:8731/ws/v1', 'wss://gw.example.org/ws/v1', 'ws://[::1]:8731', '[::1]:8732']) {
    assert.deepEqual(parseArgs(['--gateway', gateway], {}).gateways, [gateway]);
  }
  // Several gateways: repeatable or a comma list, a token each or one for all.
  const two = parseArgs(['--gateway', 'a:1,b:2', '--token', 'khr_a', '--token', 'khr_b'], {});
  assert.deepEqual([two.gateways, two.tokens], [['a:1', 'b:2'], ['khr_a', 'khr_b']]);
  assert.deepEqual(parseArgs(['--gateway', 'a:1', '--gateway', 'b:2'], { KERNELHOP_TOKEN: 'khr_all' }).tokens, ['khr_all', 'khr_all']);
  assert.throws(() => parseArgs(['--gateway', 'a:1,b:2,c:3', '--token', 'x,y'], {}), /2 runtime tokens for 3 gateways/);
  assert.throws(() => parseArgs(['--gateway', 'a:1,a:1'], {}), /names one gateway twice/);
  assert.throws(() => parseArgs(['--gateway', 'h:1', '--warm', '-1'], {}), /--warm "-1": expected an integer ≥ 0/);
  assert.throws(() => parseArgs(['--gateway', 'h:1', '--bogus'], {}), /unknown option "--bogus"/);
});

test('package sources: pip\'s own by default, a wheelhouse alone is the only source, an index keeps its wheelhouses', () => {
  const opts = (...argv: string[]): string[] => pipSourceOptions(parseArgs(['--gateway', 'h:1', ...argv], {}));
  assert.deepEqual(opts(), []);
  assert.deepEqual(opts('--find-links', '/w1', '--find-links', '/w2'), ['--no-index', '--find-links', '/w1', '--find-links', '/w2']);
  assert.deepEqual(opts('--index-url', 'https://i/simple', '--find-links', '/w'), ['--index-url', 'https://i/simple', '--find-links', '/w']);
  assert.throws(() => parseArgs(['--gateway', 'h:1', '--index-url'], {}), /--index-url needs a value/);
});

test('the runtime token comes from --token, else KERNELHOP_TOKEN', () => {
  assert.deepEqual(parseArgs(['--gateway', 'h:1'], { KERNELHOP_TOKEN: 'khr_env' }).tokens, ['khr_env']);
  assert.deepEqual(parseArgs(['--gateway', 'h:1', '--token', 'khr_flag'], { KERNELHOP_TOKEN: 'khr_env' }).tokens, ['khr_flag']);
  assert.throws(() => parseArgs(['--gateway', 'h:1', '--token'], {}), /--token needs a value/);
});

test("the cache adopts a blob from a file of this host only when its bytes are the digest's: a copy of its own, else nothing kept", async () => {
  const dir = tempDir('adopt');
  const cache = new ChunkCache(path.join(dir, 'cache'));
  const good = Buffer.from('the bytes of a blob in the gateway store');
  const store = path.join(dir, 'store-file');
  fs.writeFileSync(store, good);
  const d = digestOf(good);
  assert.equal(await cache.adopt(d, store, 0), true);
  assert.notEqual(fs.statSync(cache.pathOf(d)).ino, fs.statSync(store).ino, 'copied, not linked');
  assert.deepEqual(await cache.read(d), good);

  // A pack holds many blobs: the one asked for is the digest's size from its offset.
  const inPack = Buffer.from('a blob packed between two others');
  const pack = path.join(dir, 'a-pack');
  fs.writeFileSync(pack, Buffer.concat([Buffer.from('before it'), inPack, Buffer.from('after it')]));
  const dp = digestOf(inPack);
  assert.equal(await cache.adopt(dp, pack, 1), false, 'one byte off is other bytes');
  assert.equal(await cache.adopt(dp, pack, 9), true);
  assert.deepEqual(await cache.read(dp), inPack);
  assert.equal(await cache.adopt(digestOf(Buffer.from('after it and more')), pack, 9 + inPack.length), false, 'past the end');

  const wrong = path.join(dir, 'other-bytes');
  fs.writeFileSync(wrong, Buffer.from('not those bytes'));
  const d2 = digestOf(Buffer.from('some other blob'));
  assert.equal(await cache.adopt(d2, wrong, 0), false);
  assert.equal(await cache.adopt(d2, path.join(dir, 'absent'), 0), false);
  assert.equal(cache.has(d2), false);
  const folder = path.dirname(cache.pathOf(d2));
  assert.deepEqual(fs.existsSync(folder) ? fs.readdirSync(folder).filter((n) => n.includes('.tmp-')) : [], [], 'no temporary left');
});
