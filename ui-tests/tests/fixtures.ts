import { ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { test as galata } from '@jupyterlab/galata';

/** A JupyterLab server the fixture started, with the environment it was given. */
export interface ILabServer {
  readonly url: string;
  /** KERNELHOP_HOME of the server (a fresh temporary folder unless `labEnv` names one). */
  readonly kernelhopHome: string;
}

export interface ILabWorkerFixtures {
  /**
   * Variables for the JupyterLab server (and so its kernels and the gateway relay), over the test process's own.
   * Set with `test.use({ labEnv: {...} })` at a file's top level, or override it with a worker fixture that computes
   * it (for a gateway started by another fixture); each distinct value gets its own server.
   */
  labEnv: Record<string, string>;
  labServer: ILabServer;
}

const UI_TESTS = path.resolve(__dirname, '..');
const REPO = path.resolve(UI_TESTS, '..');

/** A loopback port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** The project's venv first, so the installed kernelhop (server extension and lab extension) is the one tested. */
function jupyterCommand(): string {
  const venv = path.join(REPO, '.venv', 'bin', 'jupyter');
  return process.env.KERNELHOP_JUPYTER ?? (existsSync(venv) ? venv : 'jupyter');
}

async function waitForLab(url: string, server: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) {
      throw new Error(`jupyter lab exited with code ${server.exitCode} before it served ${url}`);
    }
    try {
      const response = await fetch(`${url}/api/status`);
      if (response.ok) {
        return;
      }
    } catch {
      // Not listening yet.
    }
    await new Promise(resolve => setTimeout(resolve, 250));
  }
  throw new Error(`jupyter lab did not serve ${url} within ${timeoutMs} ms`);
}

async function stop(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.pid === undefined) {
    return;
  }
  const exited = new Promise<void>(resolve => server.once('exit', () => resolve()));
  // The whole process group: the server and the kernels it started.
  process.kill(-server.pid, 'SIGTERM');
  const killer = setTimeout(() => server.pid !== undefined && process.kill(-server.pid, 'SIGKILL'), 10000);
  await exited;
  clearTimeout(killer);
}

export const test = galata.extend<object, ILabWorkerFixtures>({
  labEnv: [{}, { scope: 'worker', option: true }],

  labServer: [
    async ({ labEnv }, use, workerInfo) => {
      const port = await freePort();
      const kernelhopHome = labEnv['KERNELHOP_HOME'] ?? mkdtempSync(path.join(tmpdir(), 'kernelhop-home-'));
      const logDir = path.join(UI_TESTS, 'test-results');
      mkdirSync(logDir, { recursive: true });
      const log = createWriteStream(path.join(logDir, `jupyter-worker${workerInfo.workerIndex}-${port}.log`));
      const server = spawn(
        jupyterCommand(),
        [
          'lab',
          '--config',
          path.join(UI_TESTS, 'jupyter_server_test_config.py'),
          `--ServerApp.port=${port}`,
          '--no-browser',
          // CI and these machines run as root, which Jupyter refuses unless told.
          ...(process.getuid?.() === 0 ? ['--allow-root'] : [])
        ],
        {
          cwd: UI_TESTS,
          detached: true,
          // No gateway unless a test gives one, so one left running on this machine never leaks into a test: port 9
          // (discard) refuses at once.
          env: {
            ...process.env,
            KERNELHOP_HOME: kernelhopHome,
            KERNELHOP_GATEWAY: 'ws://127.0.0.1:9',
            KERNELHOP_TOKEN: '',
            ...labEnv
          },
          stdio: ['ignore', 'pipe', 'pipe']
        }
      );
      server.stdout?.pipe(log);
      server.stderr?.pipe(log);
      // No trailing slash: Galata appends its appPath ("/lab") to the base URL.
      const url = `http://127.0.0.1:${port}`;
      try {
        await waitForLab(url, server, 60000);
        await use({ url, kernelhopHome });
      } finally {
        await stop(server);
        log.end();
      }
    },
    { scope: 'worker' }
  ],

  baseURL: async ({ labServer }, use) => {
    await use(labServer.url);
  }
});

export { expect } from '@jupyterlab/galata';
