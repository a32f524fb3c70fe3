// Worker limits (cgroups.ts): the host's cgroup v2 is read from /proc; a host without it, or whose memory and cpu
// controllers are bound to cgroup v1 (this CI host's case: `mount -t cgroup2` there offers only hugetlb), is refused
// with the reason. The limits' files are checked on a directory laid out as a delegated cgroup v2 would be: the
// kernel's enforcement itself needs a cgroup v2 host.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { CgroupError, WorkerCgroups, inCgroup, ownCgroup, parseSize } from '../src/cgroups.js';
import { ConfigError, parseArgs } from '../src/config.js';

const V1_MOUNTINFO = [
  '30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755',
  '31 30 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '32 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
].join('\n');

function fakeProc(mountinfo: string, cgroup: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kh-proc-'));
  fs.writeFileSync(path.join(dir, 'mountinfo'), mountinfo);
  fs.writeFileSync(path.join(dir, 'cgroup'), cgroup);
  return dir;
}

function fakeCgroup2(controllers: string): { proc: string; mount: string } {
  const mount = fs.mkdtempSync(path.join(os.tmpdir(), 'kh-cg2-'));
  fs.mkdirSync(path.join(mount, 'runtimes'));
  fs.writeFileSync(path.join(mount, 'runtimes', 'cgroup.controllers'), `${controllers}\n`);
  const proc = fakeProc(`${V1_MOUNTINFO}\n40 25 0:40 / ${mount} rw,relatime - cgroup2 none rw`, '4:memory:/\n0::/runtimes\n');
  return { proc, mount };
}

test('sizes and CPUs: parsed, and bad ones named', () => {
  assert.equal(parseSize('512M'), 512 * 2 ** 20);
  assert.equal(parseSize('16G'), 16 * 2 ** 30);
  assert.equal(parseSize('1.5GiB'), 1.5 * 2 ** 30);
  assert.equal(parseSize('1024'), 1024);
  assert.equal(parseSize('lots'), null);
  const c = parseArgs(['--gateway', 'h:1', '--worker-memory', '2G', '--worker-cpus', '0.5'], {});
  assert.equal(c.workerMemoryBytes, 2 * 2 ** 30);
  assert.equal(c.workerCpus, 0.5);
  assert.throws(() => parseArgs(['--gateway', 'h:1', '--worker-memory', 'lots'], {}), /--worker-memory "lots": expected a size/);
  assert.throws(() => parseArgs(['--gateway', 'h:1', '--worker-cpus', '0'], {}), /--worker-cpus "0"/);
  assert.throws(() => parseArgs(['--gateway', 'h:1', '--no-sandbox'], {}), (e: Error) => e instanceof ConfigError && /needs --single-user/.test(e.message));
});

test('a host with cgroup v1 only is refused, saying so', () => {
  const proc = fakeProc(V1_MOUNTINFO, '4:memory:/\n3:cpu:/\n');
  assert.equal(ownCgroup(V1_MOUNTINFO, '4:memory:/\n'), null);
  assert.throws(
    () => WorkerCgroups.open({ memoryBytes: 1 << 30, cpus: null }, proc),
    (e: Error) => e instanceof CgroupError && /need cgroup v2, and this host mounts none \(it has 2 cgroup v1 hierarchies\)/.test(e.message),
  );
});

test('a cgroup v2 whose memory and cpu are bound to v1 (only hugetlb free) is refused, naming them', () => {
  const { proc } = fakeCgroup2('hugetlb');
  assert.throws(
    () => WorkerCgroups.open({ memoryBytes: 1 << 30, cpus: 2 }, proc),
    (e: Error) => e instanceof CgroupError && /offers hugetlb: memory and cpu are bound to a cgroup v1 hierarchy/.test(e.message),
  );
});

test('on a delegated cgroup v2: the runtime moves into a leaf, each worker gets its limits and joins before exec', () => {
  const { proc, mount } = fakeCgroup2('cpuset cpu io memory pids');
  const cgroups = WorkerCgroups.open({ memoryBytes: 3 * 2 ** 30, cpus: 1.5 }, proc);
  const base = path.join(mount, 'runtimes', `kernelhop-runtime-${process.pid}`);
  assert.equal(fs.readFileSync(path.join(base, 'runtime', 'cgroup.procs'), 'utf8'), String(process.pid));
  assert.equal(fs.readFileSync(path.join(mount, 'runtimes', 'cgroup.subtree_control'), 'utf8'), '+memory +cpu');
  const dir = cgroups.create();
  assert.equal(fs.readFileSync(path.join(dir, 'memory.max'), 'utf8'), String(3 * 2 ** 30));
  assert.equal(fs.readFileSync(path.join(dir, 'cpu.max'), 'utf8'), '150000 100000');
  const wrapped = inCgroup(dir, 'bwrap', ['--die-with-parent', 'python3']);
  assert.deepEqual(wrapped.args.slice(2), [dir, 'bwrap', '--die-with-parent', 'python3']);
  // The shell really joins, then execs the command with its arguments.
  const ran = spawnSync(wrapped.file, [wrapped.args[0] as string, wrapped.args[1] as string, dir, '/bin/echo', 'joined'], { encoding: 'utf8' });
  assert.equal(ran.stdout, 'joined\n');
  assert.match(fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8'), /^\d+\n$/);
});

test('on this host: the runtime refuses --worker-memory unless it has cgroup v2 with the memory controller', (t) => {
  const mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  const dir = ownCgroup(mountinfo, fs.readFileSync('/proc/self/cgroup', 'utf8'));
  const offered = dir === null ? [] : fs.readFileSync(path.join(dir, 'cgroup.controllers'), 'utf8').split(/\s+/);
  if (offered.includes('memory')) return t.skip(`this host has cgroup v2 with memory at ${dir}: the refusal is not what it shows`);
  const main = path.resolve(__dirname, '../src/main.js');
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'kh-cache-'));
  const ran = spawnSync(process.execPath, [main, '--gateway', '127.0.0.1:9', '--cache', cache, '--worker-memory', '1G', '--python', 'python3'], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, KERNELHOP_TOKEN: 'khr_x' },
  });
  assert.equal(ran.status, 1, ran.stdout + ran.stderr);
  assert.match(ran.stdout + ran.stderr, /cannot limit workers: --worker-memory and --worker-cpus need (cgroup v2, and this host mounts none|the cgroup v2 controllers memory, and \S+ offers [^:]*: memory is bound to a cgroup v1 hierarchy)/);
});
