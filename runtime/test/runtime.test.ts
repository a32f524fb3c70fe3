// The real runtime process and real Python workers against a fake gateway.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseManifestBytes, manifestBlobDigests } from '@kernelhop/kernel-snapshot';
import { FakeGateway } from './fakeGateway.js';
import { PYTHON, RuntimeProcess, makeSnapshot, pidAlive, startRuntime, tempDir } from './helpers.js';
import type { CellEvent } from '../src/proto.js';

function kinds(events: CellEvent[]): string[] {
  return events
    .map((e) => (['started', 'stream', 'display', 'result', 'error', 'done', 'failed'] as const).find((k) => e[k]))
    .filter((k): k is NonNullable<typeof k> => k !== undefined);
}

describe('runtime with a fake gateway', () => {
  const gateway = new FakeGateway();
  const cache = tempDir('cache');
  let runtime: RuntimeProcess;

  before(async () => {
    await gateway.start();
    runtime = await startRuntime(['--gateway', gateway.address, '--cache', cache, '--name', 'test-host', '--warm', '1']);
  });

  after(async () => {
    await runtime?.stop();
    gateway.stop();
  });

  test('prints one ready line and registers', () => {
    assert.match(runtime.readyLine, /^kernelhop runtime ready id=rt-\d+ classes=\S+ capacity=1 gateway=127\.0\.0\.1:\d+$/);
    assert.equal(gateway.registrations[0]?.name, 'test-host');
  });

  test('runs a cell on a snapshot: events in order, the new snapshot uploaded', async () => {
    const snapshot = makeSnapshot(gateway, 'import numpy as np\nx = 41\narr = np.arange(1000)');
    const code = [
      'print("first")',
      'print("second", x + 1)',
      'from IPython.display import display, HTML',
      'display(HTML("<b>hi</b>"))',
      'y = arr.sum()',
      'y',
    ].join('\n');
    await gateway.assign(runtime.runtimeId, { runId: 'run-ok', code, snapshot });
    const events = await gateway.finished('run-ok');
    assert.deepEqual(kinds(events), ['started', 'stream', 'stream', 'display', 'result', 'done'], JSON.stringify(events));
    const streams = events.filter((e) => e.stream).map((e) => e.stream?.text);
    assert.deepEqual(streams, ['first\n', 'second 42\n']);
    assert.equal(JSON.parse(events.find((e) => e.display)?.display?.dataJson ?? '{}')['text/html'], '<b>hi</b>');
    assert.equal(JSON.parse(events.find((e) => e.result)?.result?.dataJson ?? '{}')['text/plain'], 'np.int64(499500)');
    const done = events.find((e) => e.done)?.done;
    assert.equal(done?.status, 'ok');
    const manifestBytes = gateway.store.get(done?.snapshot.hash ?? '');
    assert.ok(manifestBytes, 'the manifest of the new snapshot is in the gateway store');
    const manifest = parseManifestBytes(manifestBytes);
    for (const d of manifestBlobDigests(manifest)) assert.ok(gateway.store.has(d.hash), `chunk ${d.hash} uploaded`);
    assert.ok(manifest.groups.some((g) => g.names.includes('y')));
    const timings = JSON.parse(done?.timingsJson ?? '{}');
    for (const k of ['restore_s', 'run_s', 'capture_s', 'fetch_s', 'upload_s']) assert.equal(typeof timings[k], 'number', k);
  });

  test('a large snapshot moves in batches under 32 MiB, and only the changed chunks go back', async () => {
    const snapshot = makeSnapshot(gateway, 'import numpy as np\nbig = np.random.default_rng(0).random(6_000_000)');
    const readsBefore = gateway.readBatches.length;
    const uploadsBefore = gateway.uploaded.length;
    await gateway.assign(runtime.runtimeId, { runId: 'run-big', code: 'big[0] = 2.0\ntotal = float(big.sum())', snapshot });
    const events = await gateway.finished('run-big');
    assert.equal(events.at(-1)?.done?.status, 'ok', JSON.stringify(events));
    const reads = gateway.readBatches.slice(readsBefore);
    assert.ok(reads.filter((n) => n > 1024).length >= 2, `48 MB came in several batches: ${reads}`);
    assert.ok(reads.every((n) => n <= 32 * 1024 * 1024), `${reads}`);
    const uploaded = gateway.uploaded.slice(uploadsBefore);
    const uploadedBytes = uploaded.reduce((n, d) => n + Number(d.sizeBytes), 0);
    assert.ok(uploadedBytes < 4 * 1024 * 1024, `a one-element change uploaded ${uploadedBytes} bytes`);
    assert.equal(uploaded.at(-1)?.hash, events.at(-1)?.done?.snapshot.hash, 'the manifest goes last');
  });

  test("an exception is an error event and a done with status error; the session's worker is reused warm", async () => {
    const snapshot = makeSnapshot(gateway, 'x = 1');
    await gateway.assign(runtime.runtimeId, { runId: 'run-err', code: 'z = 5\n1/0', snapshot, session: 'sess-err' });
    const first = await gateway.finished('run-err');
    const error = first.find((e) => e.error)?.error;
    assert.equal(error?.ename, 'ZeroDivisionError');
    // IPython colours tracebacks with ANSI escapes, as Jupyter shows them.
    const plain = (error?.traceback ?? []).join('\n').replace(/\x1b\[[0-9;]*m/g, '');
    assert.match(plain, /1\/0/);
    assert.equal(first.find((e) => e.done)?.done?.status, 'error');
    const manifest = parseManifestBytes(gateway.store.get(first.find((e) => e.done)?.done?.snapshot.hash ?? '') as Buffer);
    assert.ok(manifest.groups.some((g) => g.names.includes('z')), 'what the cell set before raising comes home');

    const code = 'print(x)\nimport os\nos.system("echo from-fd-1")';
    await gateway.assign(runtime.runtimeId, { runId: 'run-err-2', code, snapshot, session: 'sess-err' });
    const second = await gateway.finished('run-err-2');
    const started1 = first.find((e) => e.started)?.started;
    const started2 = second.find((e) => e.started)?.started;
    assert.equal(started2?.warm, true);
    assert.equal(started2?.worker, started1?.worker, 'the same worker serves the same session');
    assert.equal(second.find((e) => e.stream)?.stream?.text, '1\n');
    // A subprocess writes the worker's own fd 1, which the runtime relays too.
    assert.ok(second.some((e) => e.stream?.name === 'stdout' && e.stream.text.includes('from-fd-1')), JSON.stringify(second));
  });

  test('a cancel interrupts a sleeping cell (not the 60 s it would sleep)', async () => {
    const snapshot = makeSnapshot(gateway, 'x = 1');
    await gateway.assign(runtime.runtimeId, {
      runId: 'run-cancel',
      code: 'import time\nprint("sleeping", flush=True)\ntime.sleep(60)',
      snapshot,
      session: 'sess-cancel',
    });
    await gateway.until('run-cancel', (e) => e.stream?.text === 'sleeping\n');
    await gateway.cancel(runtime.runtimeId, 'run-cancel');
    // Ends far sooner than the cell's 60 s, and no tighter bound: a timing here would fail on a loaded CI machine.
    // The 2 s a user waits is checked end to end (tests/e2e/test_gpu_cell.py, interrupt).
    const events = await gateway.finished('run-cancel', 15_000);
    assert.equal(events.at(-1)?.failed?.code, 'cancelled');
    assert.equal(events.find((e) => e.error)?.error?.ename, 'KeyboardInterrupt');
  });

  test('a cell that catches the interrupt ends with Done', async () => {
    const snapshot = makeSnapshot(gateway, 'x = 1');
    const code = 'import time\ntry:\n    print("waiting", flush=True)\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    caught = True';
    await gateway.assign(runtime.runtimeId, { runId: 'run-caught', code, snapshot });
    await gateway.until('run-caught', (e) => e.stream?.text === 'waiting\n');
    await gateway.cancel(runtime.runtimeId, 'run-caught');
    const events = await gateway.finished('run-caught', 15_000);
    const done = events.at(-1)?.done;
    assert.equal(done?.status, 'ok', JSON.stringify(events));
    const manifest = parseManifestBytes(gateway.store.get(done?.snapshot.hash ?? '') as Buffer);
    assert.ok(manifest.groups.some((g) => g.names.includes('caught')));
  });

  test('a Cancel with reason "timeout" fails the run with timeout', async () => {
    const snapshot = makeSnapshot(gateway, 'x = 1');
    await gateway.assign(runtime.runtimeId, { runId: 'run-gw-timeout', code: 'import time\nprint("zz", flush=True)\ntime.sleep(60)', snapshot });
    await gateway.until('run-gw-timeout', (e) => e.stream?.text === 'zz\n');
    (await gateway.streamOf(runtime.runtimeId)).write({ cancel: { runId: 'run-gw-timeout', reason: 'timeout' } });
    const events = await gateway.finished('run-gw-timeout', 15_000);
    assert.equal(events.at(-1)?.failed?.code, 'timeout');
  });

  test('a timeout stops the cell and says so', async () => {
    const snapshot = makeSnapshot(gateway, 'x = 1');
    await gateway.assign(runtime.runtimeId, { runId: 'run-timeout', code: 'import time\ntime.sleep(60)', snapshot, timeoutS: 1 });
    const events = await gateway.finished('run-timeout', 10_000);
    const failed = events.at(-1)?.failed;
    assert.equal(failed?.code, 'timeout');
    assert.match(failed?.message ?? '', /timeout of 1 s/);
  });

  test('a lazy assignment fetches only the chunks of the groups its reach names; the rest go back as they came', async () => {
    const snapshot = makeSnapshot(
      gateway,
      'import numpy as np\nbig = np.random.default_rng(1).random(2_000_000)\nsmall = 3',
    );
    const input = parseManifestBytes(gateway.store.get(snapshot.hash) as Buffer);
    const bigChunks = manifestBlobDigests({ ...input, groups: input.groups.filter((g) => g.names.includes('big')) });
    const readsBefore = gateway.readBatches.length;
    const assignment = { runId: 'run-lazy', code: 'small = small + 1', snapshot, lazy: true, reach: ['small'] };
    await gateway.assign(runtime.runtimeId, assignment);
    const events = await gateway.finished('run-lazy');
    const done = events.at(-1)?.done;
    assert.equal(done?.status, 'ok', JSON.stringify(events));
    const read = gateway.readBatches.slice(readsBefore).reduce((n, b) => n + b, 0);
    assert.ok(read < 100_000, `a run reaching only small read ${read} bytes`);
    assert.ok(JSON.parse(done?.timingsJson ?? '{}').fetch_bytes < 100_000);
    const output = parseManifestBytes(gateway.store.get(done?.snapshot.hash ?? '') as Buffer);
    const big = output.groups.find((g) => g.names.includes('big'));
    assert.deepEqual(big?.buffers, input.groups.find((g) => g.names.includes('big'))?.buffers);
    assert.ok(bigChunks.length > 10 && bigChunks.every((d) => gateway.store.has(d.hash)));
  });

  test('a corrupt cache entry is dropped and fetched again: the hop heals itself', async () => {
    const snapshot = makeSnapshot(gateway, 'import numpy as np\nheal = np.arange(100_000)');
    await gateway.assign(runtime.runtimeId, { runId: 'run-heal-1', code: 'n = 1', snapshot, session: 'sess-heal-1' });
    assert.equal((await gateway.finished('run-heal-1')).at(-1)?.done?.status, 'ok');
    // Every cached blob of the snapshot zeroed in place, as a damaged disk (or a writer of the cache) would leave it.
    const blobs = [snapshot, ...manifestBlobDigests(parseManifestBytes(gateway.store.get(snapshot.hash) as Buffer))];
    for (const d of blobs) fs.writeFileSync(path.join(cache, d.hash.slice(0, 2), d.hash), Buffer.alloc(Number(d.sizeBytes)));
    // Another session: a fresh worker, which reads every blob.
    await gateway.assign(runtime.runtimeId, { runId: 'run-heal-2', code: 'print(int(heal.sum()))', snapshot, session: 'sess-heal-2' });
    const events = await gateway.finished('run-heal-2');
    assert.equal(events.at(-1)?.done?.status, 'ok', JSON.stringify(events));
    assert.equal(events.find((e) => e.stream)?.stream?.text, '4999950000\n');
    for (const d of blobs) {
      const bytes = fs.readFileSync(path.join(cache, d.hash.slice(0, 2), d.hash));
      assert.ok(bytes.equals(gateway.store.get(d.hash) as Buffer), `cached blob ${d.hash} holds its bytes again`);
    }
  });

  test('a chunk missing from the gateway fails the run with restore_failed naming it', async () => {
    const snapshot = makeSnapshot(gateway, 'import numpy as np\nbig = np.ones(100)');
    const manifest = parseManifestBytes(gateway.store.get(snapshot.hash) as Buffer);
    const chunk = manifestBlobDigests(manifest)[0];
    assert.ok(chunk);
    gateway.store.delete(chunk.hash);
    await gateway.assign(runtime.runtimeId, { runId: 'run-missing', code: 'print(1)', snapshot });
    const events = await gateway.finished('run-missing');
    const failed = events.at(-1)?.failed;
    assert.equal(failed?.code, 'restore_failed');
    assert.ok(failed?.message.includes(chunk.hash), failed?.message);
  });

  test('a worker that dies mid-cell fails the run with worker_died', async () => {
    const snapshot = makeSnapshot(gateway, 'x = 1');
    await gateway.assign(runtime.runtimeId, { runId: 'run-die', code: 'import os\nos._exit(3)', snapshot });
    const events = await gateway.finished('run-die');
    const failed = events.at(-1)?.failed;
    assert.equal(failed?.code, 'worker_died');
    assert.match(failed?.message ?? '', /exited with code 3/);
  });

  test('registers again when a heartbeat says the gateway forgot it', async () => {
    const before = gateway.registrations.length;
    const registered = new Promise<string>((resolve) => gateway.once('registered', resolve));
    gateway.known.clear();
    const newId = await registered;
    assert.equal(gateway.registrations.length, before + 1);
    await gateway.streamOf(newId);
    runtime.runtimeId = newId;
    const snapshot = makeSnapshot(gateway, 'x = 2');
    await gateway.assign(newId, { runId: 'run-after-reregister', code: 'print(x)', snapshot });
    const events = await gateway.finished('run-after-reregister');
    assert.equal(events.at(-1)?.done?.status, 'ok');
  });
});

describe('classes', () => {
  const gateway = new FakeGateway();
  before(() => gateway.start());
  after(() => gateway.stop());

  test('no nvidia-smi on PATH → cpu', async () => {
    const rt = await startRuntime(['--gateway', gateway.address, '--warm', '0', '--cache', tempDir('cache')], { PATH: tempDir('emptypath') });
    try {
      assert.match(rt.readyLine, / classes=cpu capacity=1 gateway=/);
      assert.deepEqual(gateway.registrations.at(-1)?.classes, [{ name: 'cpu', simulated: false }]);
    } finally {
      await rt.stop();
    }
  });

  test('nvidia-smi device names become classes', async () => {
    const bin = tempDir('fakesmi');
    fs.writeFileSync(path.join(bin, 'nvidia-smi'), '#!/bin/sh\necho "NVIDIA H100 80GB HBM3"\necho "NVIDIA H100 80GB HBM3"\n', { mode: 0o755 });
    const rt = await startRuntime(['--gateway', gateway.address, '--warm', '0', '--cache', tempDir('cache'), '--class', 'h100', '--class', 'a100'], {
      PATH: bin,
    });
    try {
      assert.deepEqual(gateway.registrations.at(-1)?.classes, [
        { name: 'h100', simulated: false },
        { name: 'a100', simulated: true },
      ]);
    } finally {
      await rt.stop();
    }
  });

  test('--class overrides detection; a class the host lacks is simulated', async () => {
    const rt = await startRuntime(
      ['--gateway', gateway.address, '--warm', '0', '--cache', tempDir('cache'), '--class', 'h100', '--class', 'cpu', '--capacity', '2'],
      { PATH: tempDir('emptypath') },
    );
    try {
      assert.match(rt.readyLine, / classes=h100,cpu capacity=2 gateway=/);
      assert.deepEqual(gateway.registrations.at(-1)?.classes, [
        { name: 'h100', simulated: true },
        { name: 'cpu', simulated: false },
      ]);
    } finally {
      await rt.stop();
    }
  });

  test('a wrong token is refused with a clear error', async () => {
    await assert.rejects(
      startRuntime(['--gateway', gateway.address, '--warm', '0', '--cache', tempDir('cache')], { KERNELHOP_TOKEN: 'wrong' }),
      /refused our token.*KERNELHOP_TOKEN/s,
    );
  });
});

test('where workers cannot be sandboxed it serves nobody unless --single-user, and says why', async () => {
  const gateway = new FakeGateway();
  await gateway.start();
  try {
    // An interpreter that cannot start is one way a host cannot sandbox its workers; the refusal is the same.
    const args = ['--gateway', gateway.address, '--warm', '0', '--cache', tempDir('cache'), '--python', '/nonexistent/python3'];
    await assert.rejects(startRuntime(args), /cannot sandbox workers on this host: .*\/nonexistent\/python3.*--single-user/s);
    const rt = await startRuntime([...args, '--single-user']);
    await rt.stop();
    assert.match(rt.stderr(), /workers run unsandboxed \(--single-user\)/);
  } finally {
    gateway.stop();
  }
});

test('no gateway at the address: exits 1 naming the address and how to start one', async () => {
  await assert.rejects(
    startRuntime(['--gateway', '127.0.0.1:1', '--warm', '0', '--cache', tempDir('cache')]),
    /runtime exited with 1 before ready:[\s\S]*cannot reach a gateway at 127\.0\.0\.1:1[\s\S]*kernelhop gateway/,
  );
});

test('SIGTERM ends the runtime and its workers', async () => {
  const gateway = new FakeGateway();
  await gateway.start();
  const rt = await startRuntime(['--gateway', gateway.address, '--warm', '2', '--cache', tempDir('cache')]);
  try {
    // Wait for the two warm workers to report through a heartbeat.
    const deadline = Date.now() + 30_000;
    const workerPids = (): number[] => {
      const out = execFileSync('ps', ['-o', 'pid=', '--ppid', String(rt.proc.pid)], { encoding: 'utf8' });
      return out.split('\n').map((l) => Number(l.trim())).filter((n) => n > 0);
    };
    while (workerPids().length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const pids = workerPids();
    assert.equal(pids.length, 2);
    assert.equal(await rt.stop(), 0);
    await new Promise((r) => setTimeout(r, 300));
    for (const pid of pids) assert.equal(pidAlive(pid), false, `worker ${pid} is gone`);
  } finally {
    gateway.stop();
  }
});

test('a worker older than the pipes\' hello is refused, saying so, and serves no run', async () => {
  // The worker of a kernelhop before the hello: ready, then every command other than run is unknown to it.
  const shim = tempDir('oldworker');
  fs.writeFileSync(
    path.join(shim, 'old_worker.py'),
    [
      'import json, os, sys',
      'os.write(3, (json.dumps({"event": "ready", "pid": os.getpid(), "python": "3"}) + "\\n").encode())',
      'for line in sys.stdin:',
      '    op = json.loads(line).get("op")',
      '    failed = {"event": "failed", "code": "bad_command", "message": f"unknown op {op!r}; this worker knows \'run\'"}',
      '    os.write(3, (json.dumps(failed) + "\\n").encode())',
    ].join('\n'),
  );
  const python = path.join(shim, 'python');
  // Whatever the runtime asks of it (`-m kernelhop_worker ...`), this interpreter runs the old worker.
  fs.writeFileSync(python, `#!/bin/sh\nexec ${PYTHON} ${path.join(shim, 'old_worker.py')}\n`, { mode: 0o755 });
  const gateway = new FakeGateway();
  await gateway.start();
  const args = ['--gateway', gateway.address, '--warm', '0', '--cache', tempDir('cache'), '--single-user', '--no-sandbox'];
  const rt = await startRuntime([...args, '--python', python]);
  try {
    const snapshot = makeSnapshot(gateway, 'x = 1');
    await gateway.assign(rt.runtimeId, { runId: 'run-old-worker', code: 'print(x)', snapshot });
    const events = await gateway.finished('run-old-worker');
    const failed = events.at(-1)?.failed;
    assert.equal(failed?.code, 'worker_died', JSON.stringify(events));
    assert.match(failed?.message ?? '', /answered the hello with bad_command: unknown op 'hello'.*older than this runtime.*KERNELHOP_PYTHON/s);
  } finally {
    await rt.stop();
    gateway.stop();
  }
});
