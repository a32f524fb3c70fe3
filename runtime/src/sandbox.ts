// A sandbox per worker, so the cells of one session cannot see or touch another's: bubblewrap (bwrap) puts each
// worker in its own mount, pid, ipc and uts namespaces, with only the system, the Python it runs and a space of its
// own (home, /tmp, the blobs handed to it, the blobs it writes) in view. As root each worker also runs as a uid of
// its own (setpriv, from UID_BASE); otherwise in a user namespace of its own.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { WorkerCgroups, inCgroup } from './cgroups.js';

/** 'uid': bwrap as root, the worker as a uid of its own; 'userns': bwrap in a user namespace; 'none': no sandbox. */
export type SandboxKind = 'uid' | 'userns' | 'none';

/** Workers as root run as UID_BASE + n (and that gid): a range no Debian package or login user takes. */
export const UID_BASE = 61_000;
const UID_COUNT = 1_000;

/** Where a worker's space appears inside its sandbox. */
const INSIDE = { home: '/home/kernelhop', tmp: '/tmp', given: '/kernelhop/given', out: '/kernelhop/out', packages: '/kernelhop/packages' };

/** System trees every worker sees read-only (symlinks, as on merged-/usr Debian, are recreated as symlinks). */
const SYSTEM_PATHS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc'];
/** NVIDIA nodes every CUDA process needs besides its GPU's own /dev/nvidiaN. */
const NVIDIA_CONTROL_NODES = ['/dev/nvidiactl', '/dev/nvidia-uvm', '/dev/nvidia-uvm-tools', '/dev/nvidia-modeset', '/dev/nvidia-caps'];

/**
 * Names of environment variables that look like credentials: none reaches a cell. The runtime's own token is
 * KERNELHOP_TOKEN; the others are whatever the host's environment carried (cloud keys, CI secrets).
 */
const CREDENTIAL_NAME = /TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH/i;

export function withoutCredentials(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !CREDENTIAL_NAME.test(name)));
}

/** One worker's own directories (on the cache's file system, so handed-over blobs are hard links, not copies). */
export interface WorkerSpace {
  readonly root: string;
  /** Blobs the runtime verified and handed over: read-only to the worker. */
  readonly given: string;
  /** Where the worker writes the blobs it captures (flat, <out>/<hash>), for the runtime to verify and take. */
  readonly out: string;
  readonly home: string;
  readonly tmp: string;
  /** The uid (and gid) the worker runs as; null where it runs as the runtime's own user. */
  readonly uid: number | null;
  /** The GPU (/dev/nvidia<slot>) it is given; null on a host without NVIDIA devices. */
  readonly gpu: number | null;
  /** Hashes linked into `given` so far: a warm hop links only what is new. */
  readonly linked: Set<string>;
  /** Its cgroup v2 (memory and CPU limits, cgroups.ts); null where the runtime sets no limits. */
  readonly cgroup: string | null;
  /** The inodes of `given` and `out` when made: the worker's binds hold these directories, not their paths. */
  inodes: readonly number[];
}

export interface WorkerCommand {
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Sandboxed: fd 4 carries bwrap's {"child-pid": N}, the worker's pid outside its pid namespace (for signals). */
  infoFd: boolean;
}

export class Sandbox {
  private readonly uidsInUse = new Set<number>();
  private readonly gpuUse = new Map<number, number>();
  private serial = 0;
  /** The package overlays (packages.ts), read-only to every worker: built from public wheels, shared on purpose. */
  private packagesRoot: string | null = null;
  private cgroups: WorkerCgroups | null = null;

  private constructor(
    readonly kind: SandboxKind,
    /** What the sandbox gives, or why there is none. */
    readonly detail: string,
    private readonly spacesRoot: string,
    private readonly binds: string[],
    private readonly gpus: number[],
    private readonly programs = { bwrap: 'bwrap', setpriv: 'setpriv' },
  ) {}

  /** A runtime whose workers run unsandboxed (--single-user, or a test of the unsandboxed path). */
  static none(spacesRoot: string, why: string): Sandbox {
    return new Sandbox('none', why, prepareRoot(spacesRoot), [], []);
  }

  /**
   * The strongest sandbox this host allows, tried for real: a worker-like bwrap command running `python -c pass`.
   * Falls back to 'none' with the reason (what is missing and how to get it).
   */
  static detect(python: string, spacesRoot: string): Sandbox {
    const root = prepareRoot(spacesRoot);
    const probe = spawnSync(python, ['-c', PYTHON_PATHS_PROBE], { encoding: 'utf8', env: withoutCredentials(process.env) });
    if (probe.status !== 0) {
      return new Sandbox('none', `the worker interpreter ${python} did not start: ${(probe.stderr || String(probe.error)).trim()}`, root, [], []);
    }
    const binds = pythonBinds(JSON.parse(probe.stdout) as string[]);
    const gpus = fs.existsSync('/dev')
      ? fs.readdirSync('/dev').flatMap((n) => (/^nvidia\d+$/.test(n) ? [Number(n.slice(6))] : [])).sort((a, b) => a - b)
      : [];
    const asRoot = process.getuid?.() === 0;
    const kind: SandboxKind = asRoot ? 'uid' : 'userns';
    const bwrap = findProgram('bwrap');
    const setpriv = findProgram('setpriv');
    if (bwrap === null) return new Sandbox('none', 'bubblewrap (bwrap) is not installed: `apt-get install bubblewrap`', root, [], []);
    if (asRoot && setpriv === null) return new Sandbox('none', 'setpriv (util-linux) is not installed', root, [], []);
    const sandbox = new Sandbox(kind, '', root, binds, gpus, { bwrap, setpriv: setpriv ?? '' });
    const space = sandbox.open();
    try {
      const cmd = sandbox.command(space, python, ['-c', 'pass']);
      const stdio = ['ignore', 'pipe', 'pipe', 'ignore', 'pipe'] as const;
      const tried = spawnSync(cmd.file, cmd.args, { encoding: 'utf8', env: cmd.env, timeout: 30_000, stdio: [...stdio] });
      if (tried.status !== 0) {
        const how = asRoot ? 'bwrap as root' : 'bwrap in an unprivileged user namespace (kernel.unprivileged_userns_clone?)';
        return new Sandbox('none', `${how} failed here: ${(tried.stderr || String(tried.error)).trim()}`, root, [], []);
      }
    } finally {
      sandbox.close(space);
    }
    const who = asRoot ? `uids ${UID_BASE}-${UID_BASE + UID_COUNT - 1}, one per worker` : 'a user namespace per worker';
    const gpu = gpus.length > 0 ? `, each worker only its own /dev/nvidiaN of ${gpus.length}` : '';
    const detail = `bubblewrap: ${who}, own pid/mount/ipc namespaces, private /tmp and home${gpu}`;
    return new Sandbox(kind, detail, root, binds, gpus, { bwrap, setpriv: setpriv ?? '' });
  }

  /** Every worker started from now on runs in a cgroup of its own with these limits. */
  limit(cgroups: WorkerCgroups): void {
    this.cgroups = cgroups;
  }

  /** Every worker started from now on sees `root` (the package overlays) read-only. */
  sharePackages(root: string): void {
    this.packagesRoot = root;
  }

  /** Where the worker sees `hostPath`, a path under the shared package overlays. */
  packagesView(hostPath: string): string {
    if (this.kind === 'none' || this.packagesRoot === null) return hostPath;
    return path.join(INSIDE.packages, path.relative(this.packagesRoot, hostPath));
  }

  /** A fresh space for one worker: its directories, its uid, its GPU. */
  open(): WorkerSpace {
    // The package overlays' root is bound into every worker: made again if the cache was wiped under the runtime.
    if (this.packagesRoot !== null && !fs.existsSync(this.packagesRoot)) fs.mkdirSync(this.packagesRoot, { recursive: true, mode: 0o711 });
    const uid = this.kind === 'uid' ? this.takeUid() : null;
    const gpu = this.takeGpu();
    const root = path.join(this.spacesRoot, `w${process.pid}-${++this.serial}`);
    const space: WorkerSpace = {
      root,
      given: path.join(root, 'given'),
      out: path.join(root, 'out'),
      home: path.join(root, 'home'),
      tmp: path.join(root, 'tmp'),
      uid,
      gpu,
      linked: new Set(),
      cgroup: this.cgroups?.create() ?? null,
      inodes: [],
    };
    fs.rmSync(root, { recursive: true, force: true });
    fs.mkdirSync(space.given, { recursive: true, mode: 0o755 });
    for (const own of [space.out, space.home, space.tmp]) {
      fs.mkdirSync(own, { mode: 0o700 });
      if (uid !== null) fs.chownSync(own, uid, uid);
    }
    space.inodes = [space.given, space.out].map((d) => fs.statSync(d).ino);
    return space;
  }

  /**
   * Whether `space`'s directories are still the ones its worker was started with. Where they were removed (the
   * cache wiped under a running runtime), the worker reads and writes directories nobody else sees any more, and
   * blobs handed over from now on would never reach it: such a worker must not serve another run.
   */
  intact(space: WorkerSpace): boolean {
    return [space.given, space.out].every((d, i) => {
      try {
        return fs.statSync(d).ino === space.inodes[i];
      } catch {
        return false;
      }
    });
  }

  /** After the worker is gone (its whole pid namespace with it): its files, uid and GPU go back. */
  close(space: WorkerSpace): void {
    fs.rmSync(space.root, { recursive: true, force: true });
    if (space.cgroup !== null) this.cgroups?.remove(space.cgroup);
    if (space.uid !== null) this.uidsInUse.delete(space.uid);
    if (space.gpu !== null) this.gpuUse.set(space.gpu, (this.gpuUse.get(space.gpu) ?? 1) - 1);
  }

  /** How to start `python ARGS` as the worker of `space`. */
  command(space: WorkerSpace, python: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}): WorkerCommand {
    const cmd = this.commandOutsideCgroup(space, python, args, extraEnv);
    return space.cgroup === null ? cmd : { ...cmd, ...inCgroup(space.cgroup, cmd.file, cmd.args) };
  }

  private commandOutsideCgroup(space: WorkerSpace, python: string, args: string[], extraEnv: NodeJS.ProcessEnv): WorkerCommand {
    const base = { ...withoutCredentials(process.env), PYTHONUNBUFFERED: '1', ...extraEnv };
    if (this.kind === 'none') return { file: python, args, env: base, infoFd: false };
    const env = { ...base, HOME: INSIDE.home, TMPDIR: INSIDE.tmp, USER: 'kernelhop', LOGNAME: 'kernelhop' };
    const bwrap = [
      '--die-with-parent',
      '--new-session',
      '--unshare-pid',
      '--unshare-ipc',
      '--unshare-uts',
      '--unshare-cgroup-try',
      // pid 1 of its namespace: signals from the runtime reach it directly, and its death ends every process a
      // cell started, so nothing of a session outlives its worker.
      '--as-pid-1',
      '--info-fd',
      '4',
      ...(this.kind === 'userns' ? ['--unshare-user', '--cap-drop', 'ALL'] : []),
      // The private /tmp first: an interpreter or checkout under /tmp (a CI clone, say) is bound on top of it.
      '--bind',
      space.tmp,
      INSIDE.tmp,
      ...systemBinds(),
      ...this.binds,
      '--proc',
      '/proc',
      '--dev',
      '/dev',
      // A private, writable /dev/shm: POSIX semaphores and shared memory (multiprocessing, joblib, a torch
      // DataLoader's workers) need it, and it must not be another session's.
      '--perms',
      '1777',
      '--tmpfs',
      '/dev/shm',
      ...['/home', '/kernelhop'].flatMap((d) => ['--perms', '0755', '--dir', d]),
      ...this.gpuBinds(space.gpu),
      '--bind',
      space.home,
      INSIDE.home,
      '--ro-bind',
      space.given,
      INSIDE.given,
      '--bind',
      space.out,
      INSIDE.out,
      ...(this.packagesRoot === null ? [] : ['--ro-bind', this.packagesRoot, INSIDE.packages]),
      '--chdir',
      INSIDE.home,
      '--',
    ];
    const drop =
      space.uid === null
        ? []
        : [this.programs.setpriv, `--reuid=${space.uid}`, `--regid=${space.uid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs'];
    return { file: this.programs.bwrap, args: [...bwrap, ...drop, python, ...args.map((a) => inside(space, a))], env, infoFd: true };
  }

  /** The worker's view of `space`'s directories: what its command line names. */
  view(space: WorkerSpace): { given: string; out: string } {
    return this.kind === 'none' ? { given: space.given, out: space.out } : { given: INSIDE.given, out: INSIDE.out };
  }

  private gpuBinds(gpu: number | null): string[] {
    if (gpu === null) return [];
    const nodes = [`/dev/nvidia${gpu}`, ...NVIDIA_CONTROL_NODES.filter((n) => fs.existsSync(n))];
    // CUDA reads the GPUs' PCI topology under /sys.
    return [...nodes.flatMap((n) => ['--dev-bind', n, n]), '--ro-bind', '/sys', '/sys'];
  }

  private takeUid(): number {
    for (let uid = UID_BASE; uid < UID_BASE + UID_COUNT; uid++) {
      if (!this.uidsInUse.has(uid)) {
        this.uidsInUse.add(uid);
        return uid;
      }
    }
    throw new Error(`all ${UID_COUNT} sandbox uids from ${UID_BASE} are in use: too many workers at once`);
  }

  /** The GPU the fewest live workers hold: sessions share a GPU in time, never see another's. */
  private takeGpu(): number | null {
    if (this.gpus.length === 0) return null;
    const least = this.gpus.reduce((best, g) => ((this.gpuUse.get(g) ?? 0) < (this.gpuUse.get(best) ?? 0) ? g : best));
    this.gpuUse.set(least, (this.gpuUse.get(least) ?? 0) + 1);
    return least;
  }
}

/** The worker's command line names its space by host paths; inside the sandbox they are elsewhere. */
function inside(space: WorkerSpace, arg: string): string {
  if (arg === space.given) return INSIDE.given;
  if (arg === space.out) return INSIDE.out;
  return arg;
}

/** A program on PATH or in the system's own directories (a runtime may be started with a narrow PATH). */
function findProgram(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/bin', '/bin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** Spaces live under one root only the runtime's user can enter. */
function prepareRoot(root: string): string {
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  fs.chmodSync(root, 0o700);
  return root;
}

function systemBinds(): string[] {
  return SYSTEM_PATHS.flatMap((p) => {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      return [];
    }
    return st.isSymbolicLink() ? ['--symlink', fs.readlinkSync(p), p] : ['--ro-bind', p, p];
  });
}

/** The worker interpreter's prefixes and import path: what it must read to start and import its modules. */
const PYTHON_PATHS_PROBE =
  'import json, sys; print(json.dumps([sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]))';

function pythonBinds(paths: string[]): string[] {
  const covered = (p: string, by: string): boolean => p === by || p.startsWith(by.endsWith('/') ? by : `${by}/`);
  const roots = [
    ...new Set(
      paths
        .filter((p) => path.isAbsolute(p) && fs.existsSync(p))
        .map((p) => (fs.statSync(p).isDirectory() ? p : path.dirname(p)))
        .filter((p) => p !== '/' && !SYSTEM_PATHS.some((s) => covered(p, s)) && p !== os.homedir()),
    ),
  ].sort();
  const outermost = roots.filter((p) => !roots.some((q) => q !== p && covered(p, q)));
  // bwrap would make the directories above a bind 0700, which the worker's uid could not enter.
  const above = [...new Set(outermost.flatMap((p) => ancestors(p)))].sort((a, b) => a.length - b.length);
  return [...above.flatMap((d) => ['--perms', '0755', '--dir', d]), ...outermost.flatMap((p) => ['--ro-bind', p, p])];
}

function ancestors(p: string): string[] {
  const out: string[] = [];
  for (let d = path.dirname(p); d !== '/'; d = path.dirname(d)) out.push(d);
  return out;
}
