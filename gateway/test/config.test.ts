import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
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

test('--store, --s3-endpoint and --metadata name S3 and Postgres; anything else is refused with the form to use', () => {
  assert.deepEqual(loadConfig([], {}).blobStore, { kind: 'disk' });
  assert.deepEqual(loadConfig([], {}).metadataStore, { kind: 'sqlite' });
  const c = loadConfig(['--store', 's3://team-bucket/kernelhop/prod/', '--s3-endpoint', 'http://127.0.0.1:9000', '--metadata', 'postgres://kh:pw@db:5432/kh'], {});
  assert.deepEqual(c.blobStore, { kind: 's3', location: { bucket: 'team-bucket', prefix: 'kernelhop/prod' }, endpoint: 'http://127.0.0.1:9000' });
  assert.deepEqual(c.metadataStore, { kind: 'postgres', url: 'postgres://kh:pw@db:5432/kh' });
  assert.deepEqual(loadConfig(['--store', 's3://bucket'], {}).blobStore, { kind: 's3', location: { bucket: 'bucket', prefix: '' } });
  assert.throws(() => loadConfig(['--store', '/mnt/cas'], {}), /--store "\/mnt\/cas": expected s3:\/\/BUCKET\/PREFIX/);
  assert.throws(() => loadConfig(['--store', 's3://Bad_Bucket/x'], {}), /a bucket name of 3-63 lowercase letters/);
  assert.throws(() => loadConfig(['--s3-endpoint', 'http://x:9000'], {}), /--s3-endpoint is for --store s3:\/\/BUCKET\/PREFIX; give --store too/);
  assert.throws(() => loadConfig(['--store', 's3://bucket', '--s3-endpoint', 'x:9000'], {}), /expected an http:\/\/ or https:\/\/ URL/);
  assert.throws(
    () => loadConfig(['--metadata', 'mysql://u:secret@h/db'], {}),
    (e: unknown) => e instanceof ConfigError && /expected postgres:\/\/USER:PASSWORD@HOST:PORT\/DATABASE/.test(e.message) && !e.message.includes('secret'),
  );
  const run = spawnSync(process.execPath, [main, '--help'], { encoding: 'utf8', timeout: 10_000 });
  for (const word of ['--store s3://BUCKET/PREFIX', '--s3-endpoint', '--metadata postgres://', 'AWS_ACCESS_KEY_ID']) assert.ok(run.stdout.includes(word), word);
});

test('a gateway whose bucket or database does not answer exits at start with what to check', () => {
  const dead = spawnSync(
    process.execPath,
    [main, '--port', '0', '--grpc-port', '0', '--data', path.join(os.tmpdir(), `kh-dead-${process.pid}`), '--metadata', 'postgres://kh:pw@127.0.0.1:1/kh'],
    { encoding: 'utf8', timeout: 30_000, env: { ...process.env, KERNELHOP_TOKEN: 'x'.repeat(20) } },
  );
  assert.equal(dead.status, 1);
  assert.match(dead.stderr, /the metadata database postgres:\/\/kh:\*\*\*@127.0.0.1:1\/kh did not answer/);
  assert.doesNotMatch(dead.stderr, /kh:pw@/);
});

test('--target-utilization is a fraction for elastic classes; anything else is refused with the form to use', () => {
  const elastic = ['--provider', 'command', '--provider-command', 'true', '--elastic-class', 'h100'];
  assert.equal(loadConfig([...elastic, '--target-utilization', '0.85'], {}).elastic?.targetUtilization, 0.85);
  assert.equal(loadConfig(elastic, {}).elastic?.targetUtilization, undefined);
  for (const bad of ['0', '1.5', 'most', '']) {
    assert.throws(() => loadConfig([...elastic, '--target-utilization', bad], {}), /--target-utilization .* must be a fraction above 0 and at most 1/);
  }
  assert.throws(() => loadConfig(['--target-utilization', '0.9'], {}), /--target-utilization needs --provider/);
});

test('--liveness is seconds between beats, above 0 (default 5); anything else is refused with what it is', () => {
  assert.equal(loadConfig([], {}).livenessS, 5);
  assert.equal(loadConfig(['--liveness', '0.5'], {}).livenessS, 0.5);
  for (const bad of ['0', '-1', 'often', '', 'Infinity']) {
    assert.throws(() => loadConfig([`--liveness=${bad}`], {}), /--liveness .* is not a number of seconds above 0 \(e\.g\. 5\): how often this gateway beats/);
  }
  const run = spawnSync(process.execPath, [main, '--help'], { encoding: 'utf8', timeout: 10_000 });
  assert.ok(run.stdout.includes('--liveness S'), 'usage names --liveness');
});
