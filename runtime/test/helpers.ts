// Shared by the runtime's tests: the real runtime process, snapshots made by the real snapshot engine.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { PbDigest } from '../src/proto.js';
import type { FakeGateway } from './fakeGateway.js';

export const REPO = path.resolve(__dirname, '..', '..', '..');
export const MAIN = path.join(REPO, 'runtime', 'dist', 'src', 'main.js');
export const PYTHON = process.env.KERNELHOP_PYTHON || path.join(REPO, '.venv', 'bin', 'python');

const tempDirs: string[] = [];
process.on('exit', () => tempDirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** A fresh directory, removed when the test process exits. */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kernelhop-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

export interface RuntimeProcess {
  proc: ChildProcess;
  readyLine: string;
  runtimeId: string;
  stderr: () => string;
  stop: () => Promise<number | null>;
}

/** Start `node main.js` and wait for its ready line (or its exit, which rejects with stderr). */
export function startRuntime(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RuntimeProcess> {
  const proc = spawn(process.execPath, [MAIN, ...args], {
    env: { ...process.env, KERNELHOP_PYTHON: PYTHON, KERNELHOP_TOKEN: 'test-token', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  return new Promise((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`runtime exited with ${code} before ready:\n${stderr}`)));
    proc.stdout?.on('data', (b: Buffer) => {
      stdout += b.toString();
      const line = stdout.split('\n').find((l) => l.startsWith('kernelhop runtime ready'));
      if (!line) return;
      proc.removeAllListeners('exit');
      resolve({
        proc,
        readyLine: line,
        runtimeId: /id=(\S+)/.exec(line)?.[1] ?? '',
        stderr: () => stderr,
        stop: () =>
          new Promise((done) => {
            if (proc.exitCode !== null) return done(proc.exitCode);
            proc.once('exit', (code) => done(code));
            proc.kill('SIGTERM');
          }),
      });
    });
  });
}

/** Capture `setup`'s namespace with kernelhop_snapshot into a fresh store and copy its blobs into the gateway. */
export function makeSnapshot(gateway: FakeGateway, setup: string): PbDigest {
  const dir = tempDir('snap');
  const script = [
    'import sys',
    'from kernelhop_snapshot import Capturer, DirectoryBlobStore',
    'ns = {}',
    'exec(sys.argv[2], ns)',
    'ns.pop("__builtins__", None)',
    'print(Capturer(DirectoryBlobStore(sys.argv[1])).capture(ns).digest)',
  ].join('\n');
  const out = execFileSync(PYTHON, ['-c', script, dir, setup], { encoding: 'utf8' }).trim();
  for (const sub of fs.readdirSync(dir)) {
    const subdir = path.join(dir, sub);
    if (!fs.statSync(subdir).isDirectory()) continue;
    for (const name of fs.readdirSync(subdir)) {
      if (/^[0-9a-f]{64}$/.test(name)) gateway.store.set(name, fs.readFileSync(path.join(subdir, name)));
    }
  }
  const [hash, size] = out.split('/');
  return { hash: hash as string, sizeBytes: Number(size) };
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
