// The one fake of the kernel/browser WebSocket protocol (tests/support/kernelhop_fake_gateway.py), held to the real
// gateway by tests/contract, started as its own process for the link's tests of what a gateway answers. What no
// gateway does on purpose (a silent peer, a relay's close codes) stays scripted in the tests themselves.
import { ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

const ROOT = path.resolve(__dirname, '..', '..', '..');

export interface IFakeGateway {
  url: string;
  stop(): Promise<void>;
}

/** Starts the fake without a token (the browser's link never sends one: the Jupyter server's relay adds it). */
export async function startFakeGateway(): Promise<IFakeGateway> {
  const python = process.env['KERNELHOP_PYTHON'] ?? path.join(ROOT, '.venv', 'bin', 'python');
  const script = path.join(ROOT, 'tests', 'support', 'kernelhop_fake_gateway.py');
  const child = spawn(python, [script, '--token', ''], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', code => reject(new Error(`the fake gateway (${python}) exited with ${code}: ${stderr}`)));
    child.once('error', reject);
    readline.createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', line => resolve(line.trim()));
  });
  return { url, stop: () => Private.stop(child) };
}

namespace Private {
  /** Closing its stdin ends the fake's process. */
  export function stop(child: ChildProcess): Promise<void> {
    if (child.exitCode !== null) {
      return Promise.resolve();
    }
    return new Promise(resolve => {
      child.once('exit', () => resolve());
      child.stdin?.end();
    });
  }
}
