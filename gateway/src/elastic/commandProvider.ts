// A provider that runs a command of the operator's per runtime: typically `kernelhop runtime` on this host, or a
// script that starts one elsewhere (ssh, a cloud CLI) and stays in the foreground while it lives. The command gets
// the class, the gateway and a one-time runtime token in its environment, never on its command line (ps shows that).
import { spawn } from 'node:child_process';
import type { Log } from '../log.js';
import { ProvidedRuntime, RuntimeProvider, RuntimeRequest } from './provider.js';

/** How long a released command has between SIGTERM and SIGKILL. */
const STOP_GRACE_MS = 10_000;

export class CommandProvider implements RuntimeProvider {
  readonly kind = 'command';

  constructor(
    private readonly command: string,
    private readonly log: Log,
  ) {}

  async provide(req: RuntimeRequest): Promise<ProvidedRuntime> {
    const child = spawn('/bin/sh', ['-c', this.command], {
      // Its own process group, so that release stops the runtime and whatever it started (its workers).
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        KERNELHOP_CLASS: req.gpuClass,
        KERNELHOP_GATEWAY: req.gateway,
        KERNELHOP_TOKEN: req.enrollmentToken,
        KERNELHOP_RUNTIME_NAME: req.name,
      },
    });
    const relay = (chunk: Buffer): void => {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') this.log(line, { runtime: req.name, provider: 'command' });
    };
    child.stdout.on('data', relay);
    child.stderr.on('data', relay);
    const ended = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        this.log(`provided runtime's command ended (${signal ?? `exit ${code}`})`, { runtime: req.name });
        resolve();
      });
      child.once('error', (e) => {
        this.log(`could not run the provider command: ${e.message}`, { runtime: req.name });
        resolve();
      });
    });
    let released: Promise<void> | undefined;
    const release = (): Promise<void> =>
      (released ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
        const group = -child.pid;
        signalGroup(group, 'SIGTERM');
        const killer = setTimeout(() => signalGroup(group, 'SIGKILL'), STOP_GRACE_MS);
        await ended;
        clearTimeout(killer);
      })());
    return { ended, release };
  }
}

function signalGroup(group: number, signal: NodeJS.Signals): void {
  try {
    process.kill(group, signal);
  } catch {
    // Gone already.
  }
}
