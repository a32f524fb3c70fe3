// One Python worker process (`python -m kernelhop_worker --given DIR --out DIR`) in a sandbox of its own:
// JSON-line commands on stdin, JSON-line events on fd 3, its raw stdout/stderr relayed as text, SIGINT to interrupt.
import { ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as readline from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import {
  agree,
  create,
  decodeTagged,
  encodeTagged,
  WorkerCommandSchema,
  WorkerEventSchema,
  offer,
  RunFailure_Code,
  type Capabilities,
  type RunCell,
  type WorkerCommand,
  type WorkerEvent,
} from '@kernelhop/proto';
import { Sandbox, WorkerSpace } from './sandbox.js';

/** An event the worker wrote on fd 3: the schema's WorkerEvent (proto/kernelhop/v1/worker.proto). */
export type { WorkerEvent };
/** A cell to run: the schema's RunCell, sent as `{"op": "run", ...}`. */
export type RunCommand = RunCell;

export interface WorkerOptions {
  python: string;
  sandbox: Sandbox;
  env?: NodeJS.ProcessEnv;
  /** How long a worker may take to import its modules and say ready. */
  startTimeoutMs?: number;
}

const STDERR_TAIL_CHARS = 4000;

/** What the runtime offers in the pipes' hello: the schema's defaults (no codecs: blobs go by files, not pipes). */
const PIPE_CAPABILITIES = offer([]);

/**
 * Emits 'event' (WorkerEvent), 'output' (stream name, text) for the process's own fd 1/2, and 'exit'
 * (description) once when the process is gone.
 */
export class WorkerProcess extends EventEmitter {
  readonly ready: Promise<void>;
  /** The run it serves now, if any: output outside a run belongs to the runtime's log. */
  runId: string | null = null;
  isReady = false;
  /** What the pipes' hello agreed (worker.proto); the runtime's offer until then. */
  agreed: Capabilities = PIPE_CAPABILITIES;
  /** Its own directories: blobs handed to it, blobs it wrote, home and /tmp. */
  readonly space: WorkerSpace;
  private readonly child: ChildProcess;
  /** The worker's own pid (outside its pid namespace): bwrap passes signals on to nobody. */
  private workerPid: number | null = null;
  private readonly events: Readable;
  private stderrTail = '';
  private exitDescription: string | null = null;

  constructor(opts: WorkerOptions) {
    super();
    this.space = opts.sandbox.open();
    const view = opts.sandbox.view(this.space);
    const cmd = opts.sandbox.command(
      this.space,
      opts.python,
      ['-m', 'kernelhop_worker', '--given', view.given, '--out', view.out],
      opts.env,
    );
    this.child = spawn(cmd.file, cmd.args, {
      stdio: ['pipe', 'pipe', 'pipe', 'pipe', cmd.infoFd ? 'pipe' : 'ignore'],
      env: cmd.env,
    });
    this.events = this.child.stdio[3] as Readable;
    const pidKnown = cmd.infoFd ? this.readChildPid(this.child.stdio[4] as Readable) : Promise.resolve();
    this.once('exit', () => opts.sandbox.close(this.space));
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
      const who = `the Python worker (${opts.python} -m kernelhop_worker)`;
      const refuse = (why: string): void => {
        clearTimeout(timer);
        this.off('event', onEvent);
        reject(new Error(`${who} ${why}`));
        this.kill();
      };
      // ready (its imports are done), then the hello: the runtime's offer, answered by the worker's own.
      const onEvent = (e: WorkerEvent): void => {
        if (e.kind.case === 'ready') {
          this.write({ case: 'hello', value: PIPE_CAPABILITIES });
        } else if (e.kind.case === 'failed') {
          // A worker older than the pipes' hello answers it as an unknown command.
          refuse(
            `answered the hello with ${RunFailure_Code[e.kind.value.code]}: ${e.kind.value.message}. It is older than this runtime: ` +
              `install the runtime's kernelhop for that Python, or pass --python / KERNELHOP_PYTHON of this installation`,
          );
        } else if (e.kind.case === 'hello') {
          try {
            this.agreed = agree(PIPE_CAPABILITIES, e.kind.value, who);
          } catch (err) {
            return refuse(`refused the hello: ${(err as Error).message}`);
          }
          clearTimeout(timer);
          this.off('event', onEvent);
          // bwrap wrote the pid before starting the worker, so it is there by now, or the process is gone.
          void pidKnown.then(() => {
            this.isReady = this.alive;
            resolve();
          });
        }
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
    return this.workerPid ?? this.child.pid ?? -1;
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
    this.write({ case: 'run', value: command });
  }

  private write(kind: WorkerCommand['kind']): void {
    const line = JSON.stringify(encodeTagged(WorkerCommandSchema, 'op', create(WorkerCommandSchema, { kind }))) + '\n';
    // Obeying the agreement: a command over the worker's line limit is a bug here, not something to cut.
    if (Buffer.byteLength(line) > this.agreed.maxFrameBytes) {
      throw new Error(`a ${kind.case} command of ${Buffer.byteLength(line)} bytes is over the worker's line limit (${this.agreed.maxFrameBytes})`);
    }
    (this.child.stdin as Writable).write(line);
  }

  interrupt(): void {
    if (this.alive) this.signal('SIGINT');
  }

  /** Closing stdin makes the worker exit; SIGKILL makes sure of it (bwrap then exits with it). */
  kill(): void {
    if (!this.alive) return;
    this.child.stdin?.end();
    this.signal('SIGKILL');
    this.child.kill('SIGKILL');
  }

  private signal(name: NodeJS.Signals): void {
    try {
      process.kill(this.pid, name);
    } catch {
      // Already gone: its exit is on its way.
    }
  }

  /** bwrap's --info-fd: one JSON object whose "child-pid" is the sandboxed worker's pid as this runtime sees it. */
  private readChildPid(info: Readable): Promise<void> {
    return new Promise((resolve) => {
      let text = '';
      info.setEncoding('utf8');
      info.on('data', (chunk: string) => {
        text += chunk;
        const match = /"child-pid"\s*:\s*(\d+)/.exec(text);
        // Read on to the end, never closed early: bwrap writes more after the pid, and a closed pipe kills it.
        // The worker holds this pipe too; nothing after the first pid counts.
        if (match && this.workerPid === null) {
          this.workerPid = Number(match[1]);
          resolve();
        }
      });
      info.once('close', () => resolve());
    });
  }

  stderrHint(): string {
    const tail = this.stderrTail.trim();
    return tail ? `; its stderr ends with:\n${tail}` : '';
  }

  private onLine(line: string): void {
    if (!line.trim()) return;
    if (Buffer.byteLength(line) > this.agreed.maxFrameBytes) {
      this.emit('output', 'stderr', `kernelhop runtime: a worker event line over the agreed ${this.agreed.maxFrameBytes} bytes was dropped\n`);
      return;
    }
    let event: WorkerEvent;
    try {
      event = decodeTagged<WorkerEvent>(WorkerEventSchema, 'event', JSON.parse(line));
    } catch (e) {
      // Only the worker writes fd 3; a line off the schema is a bug there, shown rather than lost.
      this.emit('output', 'stderr', `kernelhop runtime: unreadable worker event line (${(e as Error).message}): ${line.slice(0, 200)}\n`);
      return;
    }
    this.emit('event', event);
  }

  private onExit(description: string): void {
    if (this.exitDescription !== null) return;
    this.exitDescription = description;
    this.emit('exit', description);
  }
}
