// One Python worker process (`python -m kernelhop_worker --cache DIR`): JSON-line commands on stdin,
// JSON-line events on fd 3, its raw stdout/stderr relayed as text, SIGINT to interrupt.
import { ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as readline from 'node:readline';
import type { Readable, Writable } from 'node:stream';

/** An event the worker wrote on fd 3; `event` names its kind (ready, stream, display, result, error, done, failed). */
export interface WorkerEvent {
  event: string;
  run_id?: string;
  [field: string]: unknown;
}

export interface RunCommand {
  op: 'run';
  run_id: string;
  code: string;
  snapshot: string;
  /** Lazy restore: the names to restore before the cell; null = all. */
  reach: string[] | null;
}

export interface WorkerOptions {
  python: string;
  cache: string;
  env?: NodeJS.ProcessEnv;
  /** How long a worker may take to import its modules and say ready. */
  startTimeoutMs?: number;
}

const STDERR_TAIL_CHARS = 4000;

/**
 * Emits 'event' (WorkerEvent), 'output' (stream name, text) for the process's own fd 1/2, and 'exit'
 * (description) once when the process is gone.
 */
export class WorkerProcess extends EventEmitter {
  readonly ready: Promise<void>;
  /** The run it serves now, if any: output outside a run belongs to the runtime's log. */
  runId: string | null = null;
  isReady = false;
  private readonly child: ChildProcess;
  private readonly events: Readable;
  private stderrTail = '';
  private exitDescription: string | null = null;

  constructor(opts: WorkerOptions) {
    super();
    this.child = spawn(opts.python, ['-m', 'kernelhop_worker', '--cache', opts.cache], {
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONUNBUFFERED: '1', ...opts.env },
    });
    this.events = this.child.stdio[3] as Readable;
    const lines = readline.createInterface({ input: this.events, crlfDelay: Infinity });
    lines.on('line', (line) => this.onLine(line));
    let eventsEnded = false;
    lines.once('close', () => (eventsEnded = true));
    for (const name of ['stdout', 'stderr'] as const) {
      const stream = this.child[name] as Readable;
      stream.setEncoding('utf8');
      stream.on('data', (text: string) => {
        if (name === 'stderr') this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL_CHARS);
        this.emit('output', name, text);
      });
    }
    // A closed stdin (the worker died) must not crash the runtime with EPIPE.
    this.child.stdin?.on('error', () => undefined);

    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`the Python worker did not start within ${(opts.startTimeoutMs ?? 120_000) / 1000} s`));
        this.kill();
      }, opts.startTimeoutMs ?? 120_000);
      const onEvent = (e: WorkerEvent): void => {
        if (e.event !== 'ready') return;
        clearTimeout(timer);
        this.off('event', onEvent);
        this.isReady = true;
        resolve();
      };
      this.on('event', onEvent);
      this.once('exit', (why: string) => {
        clearTimeout(timer);
        reject(new Error(`the Python worker (${opts.python} -m kernelhop_worker) ${why} before it was ready${this.stderrHint()}`));
      });
    });
    // Whoever waits on `ready` sees the failure; this keeps an unobserved failure from being fatal.
    this.ready.catch(() => undefined);

    this.child.on('error', (err) => this.onExit(`could not be started: ${err.message}`));
    this.child.on('exit', (code, signal) => {
      const why = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      // Events it wrote just before exiting may still be in the pipe: report the exit after them.
      // Only the worker holds fd 3 (its subprocesses don't inherit it), so the pipe ends promptly.
      if (eventsEnded) return this.onExit(why);
      const fallback = setTimeout(() => this.onExit(why), 1000);
      lines.once('close', () => {
        clearTimeout(fallback);
        this.onExit(why);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return this.exitDescription === null;
  }

  /** Stop reading events (backpressure from the gateway stream); resume() starts again. */
  pause(): void {
    this.events.pause();
  }

  resume(): void {
    this.events.resume();
  }

  send(command: RunCommand): void {
    (this.child.stdin as Writable).write(JSON.stringify(command) + '\n');
  }

  interrupt(): void {
    if (this.alive) this.child.kill('SIGINT');
  }

  /** Closing stdin makes the worker exit; SIGKILL makes sure of it. */
  kill(): void {
    if (!this.alive) return;
    this.child.stdin?.end();
    this.child.kill('SIGKILL');
  }

  stderrHint(): string {
    const tail = this.stderrTail.trim();
    return tail ? `; its stderr ends with:\n${tail}` : '';
  }

  private onLine(line: string): void {
    if (!line.trim()) return;
    let event: WorkerEvent;
    try {
      event = JSON.parse(line) as WorkerEvent;
    } catch {
      // Only the worker writes fd 3; a bad line is a bug there, shown rather than lost.
      this.emit('output', 'stderr', `kernelhop runtime: unreadable worker event line: ${line.slice(0, 200)}\n`);
      return;
    }
    if (typeof event?.event === 'string') this.emit('event', event);
  }

  private onExit(description: string): void {
    if (this.exitDescription !== null) return;
    this.exitDescription = description;
    this.emit('exit', description);
  }
}
