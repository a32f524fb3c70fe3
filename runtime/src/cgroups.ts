// Memory and CPU limits for each worker (--worker-memory, --worker-cpus), as a cgroup v2 per worker. Only cgroup v2
// can be delegated to a runtime and nested per worker; on a host without it (or whose memory and cpu controllers
// are bound to cgroup v1) the runtime refuses these options and says why, rather than running workers unbounded.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface WorkerLimits {
  /** memory.max of each worker, in bytes (swap off: memory.swap.max 0). */
  memoryBytes: number | null;
  /** CPUs each worker may use, as cpu.max's quota over a 100 ms period. */
  cpus: number | null;
}

export class CgroupError extends Error {
  override name = 'CgroupError';
}

const PERIOD_US = 100_000;

/** Where this process's cgroup v2 lives, read from /proc: the cgroup2 mount point joined with its own path. */
export function ownCgroup(mountinfo: string, selfCgroup: string): string | null {
  const mount = mountinfo
    .split('\n')
    .map((line) => line.split(' - '))
    .find(([, after]) => after?.split(' ')[0] === 'cgroup2')?.[0]
    ?.split(' ')[4];
  const own = selfCgroup
    .split('\n')
    .find((line) => line.startsWith('0::'))
    ?.slice(3);
  return mount === undefined || own === undefined ? null : path.join(mount, own);
}

/** The cgroups of one runtime's workers: one leaf each under a cgroup of the runtime's own. */
export class WorkerCgroups {
  private serial = 0;

  private constructor(
    private readonly base: string,
    private readonly limits: WorkerLimits,
  ) {}

  /**
   * Checks the host offers what `limits` need and makes the runtime's cgroup, or throws a CgroupError saying what
   * is missing. The runtime moves itself into a leaf `runtime` of it: cgroup v2 lets a cgroup hand controllers
   * to its children only while it holds no process itself.
   */
  static open(limits: WorkerLimits, proc = '/proc/self'): WorkerCgroups {
    const wanted = [...(limits.memoryBytes !== null ? ['memory'] : []), ...(limits.cpus !== null ? ['cpu'] : [])];
    const read = (file: string): string => {
      try {
        return fs.readFileSync(file, 'utf8');
      } catch {
        return '';
      }
    };
    const mountinfo = read(path.join(proc, 'mountinfo'));
    const dir = ownCgroup(mountinfo, read(path.join(proc, 'cgroup')));
    if (dir === null || !fs.existsSync(path.join(dir, 'cgroup.controllers'))) {
      const v1 = mountinfo.split('\n').filter((l) => / - cgroup /.test(l)).length;
      throw new CgroupError(
        `--worker-memory and --worker-cpus need cgroup v2, and this host mounts none${v1 > 0 ? ` (it has ${v1} cgroup v1 hierarchies)` : ''}. ` +
          'Boot with systemd.unified_cgroup_hierarchy=1, or start the runtime without these options (workers then have no memory or CPU limit).',
      );
    }
    const offered = read(path.join(dir, 'cgroup.controllers')).trim().split(/\s+/).filter(Boolean);
    const missing = wanted.filter((c) => !offered.includes(c));
    if (missing.length > 0) {
      throw new CgroupError(
        `--worker-memory and --worker-cpus need the cgroup v2 controllers ${wanted.join(' and ')}, and ${dir} offers ` +
          `${offered.length > 0 ? offered.join(', ') : 'none'}: ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} bound to ` +
          'a cgroup v1 hierarchy on this host (or not delegated to this runtime: run it in a cgroup of its own, e.g. ' +
          '`systemd-run --scope -p Delegate=yes`).',
      );
    }
    const base = path.join(dir, `kernelhop-runtime-${process.pid}`);
    try {
      fs.mkdirSync(path.join(base, 'runtime'), { recursive: true });
      fs.writeFileSync(path.join(base, 'runtime', 'cgroup.procs'), String(process.pid));
      fs.writeFileSync(path.join(dir, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '));
      fs.writeFileSync(path.join(base, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '));
    } catch (err) {
      throw new CgroupError(
        `could not set up the workers' cgroups under ${dir}: ${(err as Error).message}. The runtime needs a cgroup ` +
          'of its own, delegated to it, with no other process in it (`systemd-run --scope -p Delegate=yes ...`).',
      );
    }
    return new WorkerCgroups(base, limits);
  }

  /** A new leaf for one worker, with the limits written; the worker joins it before it execs (wrap). */
  create(): string {
    const dir = path.join(this.base, `w${++this.serial}`);
    fs.mkdirSync(dir);
    if (this.limits.memoryBytes !== null) {
      fs.writeFileSync(path.join(dir, 'memory.max'), String(this.limits.memoryBytes));
      if (fs.existsSync(path.join(dir, 'memory.swap.max'))) fs.writeFileSync(path.join(dir, 'memory.swap.max'), '0');
    }
    if (this.limits.cpus !== null) {
      fs.writeFileSync(path.join(dir, 'cpu.max'), `${Math.round(this.limits.cpus * PERIOD_US)} ${PERIOD_US}`);
    }
    return dir;
  }

  /** After the worker is gone: a cgroup is removed with rmdir once no process is left in it. */
  remove(dir: string): void {
    try {
      fs.rmdirSync(dir);
    } catch {
      // still busy (a process of the worker not yet reaped): the runtime's own cgroup goes with the host's cleanup
    }
  }
}

/**
 * `file args` started inside cgroup `dir`: a shell writes its own pid to cgroup.procs, then execs the command, so
 * the worker never runs a moment outside its limits. fds 3 and 4 (events, bwrap's info) pass through the exec.
 */
export function inCgroup(dir: string, file: string, args: string[]): { file: string; args: string[] } {
  return { file: '/bin/sh', args: ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, file, ...args] };
}

/** "512M", "4G", "1073741824" → bytes. */
export function parseSize(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)i?B?$/i.exec(text.trim());
  if (m === null) return null;
  const scale = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[(m[2] ?? '').toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const bytes = Math.floor(Number(m[1]) * scale);
  return bytes > 0 ? bytes : null;
}
