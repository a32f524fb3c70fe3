// Slots and devices: one slot per GPU or MIG instance from nvidia-smi, posed slots on a CPU host, and a worker that
// sees only its slot's device, checked from inside real cells; a warm worker ended when its slot goes to another session.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseDevices, resolveSlots } from '../src/devices.js';
import { FakeGateway } from './fakeGateway.js';
import { RuntimeProcess, makeSnapshot, pidAlive, startRuntime, tempDir } from './helpers.js';

// As `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits` and `nvidia-smi -L` print them.
const QUERY = '0, NVIDIA A100-SXM4-40GB, 40960, GPU-aaaa\n1, NVIDIA A100-SXM4-40GB, 40960, GPU-bbbb\n';
const LISTING = [
  'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)',
  '  MIG 3g.20gb     Device  0: (UUID: MIG-1111)',
  '  MIG 3g.20gb     Device  1: (UUID: MIG-2222)',
  'GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb)',
  '',
].join('\n');

test('nvidia-smi: one slot per GPU, one per MIG instance of a GPU in MIG mode', () => {
  const gpus = parseDevices(QUERY, LISTING);
  assert.deepEqual(gpus.map((g) => [g.index, g.memoryMib, g.mig.length]), [[0, 40960, 2], [1, 40960, 0]]);
  const slots = resolveSlots([{ name: 'a100', simulated: false }], gpus, null);
  assert.deepEqual(
    slots.map((s) => [s.index, s.device, s.memoryMib]),
    [[0, 'MIG-1111', 20480], [1, 'MIG-2222', 20480], [2, '1', 40960]],
  );
  // --gpus N on a host with the devices offers the first N of them.
  assert.deepEqual(resolveSlots([{ name: 'a100', simulated: false }], gpus, 2).map((s) => s.device), ['MIG-1111', 'MIG-2222']);
  assert.throws(() => resolveSlots([{ name: 'a100', simulated: false }], gpus, 4), /--gpus 4: this host has 3 GPU slot\(s\) of a100/);
});

test('posed slots: a simulated class shows each worker its index; plain cpu shows none', () => {
  assert.deepEqual(resolveSlots([{ name: 'h100', simulated: true }], [], 3).map((s) => s.device), ['0', '1', '2']);
  assert.deepEqual(resolveSlots([{ name: 'cpu', simulated: false }], [], null).map((s) => s.device), ['']);
});

describe('a runtime posing 2 h100 slots', () => {
  const gateway = new FakeGateway();
  let runtime: RuntimeProcess;

  before(async () => {
    await gateway.start();
    // No nvidia-smi on PATH: the h100s are posed.
    runtime = await startRuntime(['--gateway', gateway.address, '--cache', tempDir('cache'), '--class', 'h100', '--gpus', '2', '--warm', '0'], {
      PATH: tempDir('emptypath'),
    });
  });

  after(async () => {
    await runtime?.stop();
    gateway.stop();
  });

  test('registers 2 slots and each cell sees only its own device', async () => {
    assert.match(runtime.readyLine, / classes=h100 capacity=2 /);
    assert.deepEqual(gateway.registrations.at(-1)?.slots.map((s) => s.device), ['0', '1']);
    const snapshot = makeSnapshot(gateway, 'x = 1');
    const code = 'import os\nprint(os.environ["CUDA_VISIBLE_DEVICES"], os.environ["KERNELHOP_SLOT"])';
    await gateway.assign(runtime.runtimeId, { runId: 'on-1', code, snapshot, session: 'a', slot: 1, warmGraceS: 30 });
    await gateway.assign(runtime.runtimeId, { runId: 'on-0', code, snapshot, session: 'b', slot: 0, warmGraceS: 30 });
    const on1 = await gateway.finished('on-1', 60_000);
    const on0 = await gateway.finished('on-0', 60_000);
    assert.equal(on1.find((e) => e.stream)?.stream?.text, '1 1\n');
    assert.equal(on0.find((e) => e.stream)?.stream?.text, '0 0\n');
  });

  test("a run of another session on a slot ends the idle worker there (eviction); the session's own reuses it", async () => {
    const snapshot = makeSnapshot(gateway, 'x = 1');
    const pid = 'import os\nprint(os.getpid())';
    await gateway.assign(runtime.runtimeId, { runId: 'a-1', code: pid, snapshot, session: 'warm-a', slot: 0, warmGraceS: 30 });
    const first = await gateway.finished('a-1', 60_000);
    await gateway.assign(runtime.runtimeId, { runId: 'a-2', code: pid, snapshot, session: 'warm-a', slot: 0, warmGraceS: 30 });
    const again = await gateway.finished('a-2', 60_000);
    assert.equal(again.find((e) => e.started)?.started?.warm, true);
    const worker = first.find((e) => e.started)?.started?.worker ?? '';
    assert.equal(again.find((e) => e.started)?.started?.worker, worker, 'the same worker, warm on its slot');
    await gateway.assign(runtime.runtimeId, { runId: 'b-1', code: pid, snapshot, session: 'evicting-b', slot: 0, warmGraceS: 30 });
    const other = await gateway.finished('b-1', 60_000);
    assert.notEqual(other.find((e) => e.started)?.started?.worker, worker);
    const evictedPid = Number(worker.split('/').at(-1));
    for (let i = 0; i < 50 && pidAlive(evictedPid); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(pidAlive(evictedPid), false, "the evicted session's worker ended, its memory freed");
  });
});
