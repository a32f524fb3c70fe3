import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';

const main = path.join(__dirname, '..', 'src', 'main.js');

test('--help prints what each option and variable does and exits 0, starting nothing', () => {
  const run = spawnSync(process.execPath, [main, '--help'], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /^usage: kernelhop gateway /);
  for (const word of ['--host', '--port', '--grpc-port', '--data', '--runtime-token-file', 'KERNELHOP_TOKEN', 'KERNELHOP_USER']) {
    assert.ok(run.stdout.includes(word), `usage names ${word}`);
  }
  assert.doesNotMatch(run.stdout, /ready/);
});

test('an unknown option or a bad port is refused with the reason and the usage', () => {
  assert.throws(
    () => loadConfig(['--bogus'], {}),
    (e: unknown) => e instanceof ConfigError && /'--bogus'/.test(e.message) && /usage: kernelhop gateway/.test(e.message),
  );
  assert.throws(() => loadConfig(['--port', '70000'], {}), /--port "70000" is not a port number/);
  const run = spawnSync(process.execPath, [main, '--bogus'], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(run.status, 2);
  assert.match(run.stderr, /^kernelhop gateway: Unknown option '--bogus'/);
});
