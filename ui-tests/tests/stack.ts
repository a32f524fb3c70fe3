import { ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

import { test as base } from './fixtures';

const REPO = path.resolve(__dirname, '..', '..');
const PYTHON = process.env.KERNELHOP_PYTHON ?? path.join(REPO, '.venv', 'bin', 'python');

/** A real gateway and one runtime posing as h100 on this CPU, as kernelhop/cli/services.py starts them. */
export interface IStack {
  readonly wsUrl: string;
  readonly token: string;
  /** KERNELHOP_HOME for JupyterLab and its kernels: keys and trust of the admin user. */
  readonly home: string;
}

/** Starts a Node service and resolves with the fields of its ready line (`kernelhop NAME ready k=v ...`). */
function startService(name: string, args: string[], env: NodeJS.ProcessEnv, logDir: string): Promise<{ child: ChildProcess; ready: Record<string, string> }> {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const log = createWriteStream(path.join(logDir, `${name}.log`));
  child.stderr?.pipe(log);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the ${name} was not ready in 60 s`)), 60000);
    let buffered = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      log.write(chunk);
      buffered += chunk.toString();
      const line = buffered.split('\n').find(l => l.startsWith(`kernelhop ${name} ready `));
      if (line) {
        clearTimeout(timer);
        const ready = Object.fromEntries(
          line
            .split(' ')
            .slice(3)
            .map(kv => kv.split('=', 2) as [string, string])
        );
        resolve({ child, ready });
      }
    });
    child.once('exit', code => {
      clearTimeout(timer);
      reject(new Error(`the ${name} exited with code ${code} before it was ready (see ${logDir}/${name}.log)`));
    });
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) {
    return Promise.resolve();
  }
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()));
  // The group: a runtime's Python workers go with it.
  process.kill(-child.pid, 'SIGTERM');
  return exited;
}

/** A worker-scoped stack, and JupyterLab pointed at it. */
export const test = base.extend<object, { stack: IStack }>({
  stack: [
    async ({}, use, workerInfo) => {
      const root = mkdtempSync(path.join(tmpdir(), 'kernelhop-ui-stack-'));
      const logDir = path.join(__dirname, '..', 'test-results', `stack-worker${workerInfo.workerIndex}`);
      mkdirSync(logDir, { recursive: true });
      const token = randomBytes(16).toString('hex');
      const env = { ...process.env, KERNELHOP_TOKEN: token, KERNELHOP_HOME: root, KERNELHOP_PYTHON: PYTHON };
      const gateway = await startService(
        'gateway',
        [
          path.join(REPO, 'gateway', 'dist', 'src', 'main.js'),
          '--host',
          '127.0.0.1',
          '--port',
          '0',
          '--grpc-port',
          '0',
          '--data',
          path.join(root, 'gateway'),
          '--runtime-token-file',
          path.join(root, 'runtime-token')
        ],
        env,
        logDir
      );
      // The runtime gets the runtime token the gateway wrote: gRPC refuses the admin's.
      const runtimeEnv = { ...env, KERNELHOP_TOKEN: readFileSync(path.join(root, 'runtime-token'), 'utf8').trim() };
      try {
        const runtime = await startService(
          'runtime',
          [
            path.join(REPO, 'runtime', 'dist', 'src', 'main.js'),
            '--gateway',
            gateway.ready['grpc']!,
            '--class',
            'h100',
            '--capacity',
            '1',
            '--cache',
            path.join(root, 'runtime-cache'),
            '--python',
            PYTHON
          ],
          runtimeEnv,
          logDir
        );
        try {
          await use({ wsUrl: gateway.ready['ws']!, token, home: root });
        } finally {
          await stop(runtime.child);
        }
      } finally {
        await stop(gateway.child);
      }
    },
    { scope: 'worker' }
  ],
  labEnv: [
    async ({ stack }, use) => use({ KERNELHOP_GATEWAY: stack.wsUrl, KERNELHOP_TOKEN: stack.token, KERNELHOP_HOME: stack.home }),
    { scope: 'worker' }
  ]
});

export { expect } from './fixtures';
