// The daemon's life with one gateway: register, heartbeat, hold the Work stream, run assignments,
// and re-register when the gateway forgets us or the stream breaks. A runtime given several gateways has one of these
// per gateway, sharing the workers, the cache and the slots (slotArbiter.ts).
import * as grpc from '@grpc/grpc-js';
import { ChunkCache } from './chunkCache.js';
import { GatewayClient, WorkStream } from './gatewayClient.js';
import type { GatewayMessage, PbGpuClass } from './proto.js';
import type { PackageOverlays } from './packages.js';
import { Run } from './runner.js';
import type { Sandbox } from './sandbox.js';
import type { Slot } from './devices.js';
import { SlotArbiter, SlotHolder } from './slotArbiter.js';
import { WorkerPool } from './workerPool.js';

export interface RuntimeOptions {
  gateway: GatewayClient;
  cache: ChunkCache;
  overlays: PackageOverlays;
  sandbox: Sandbox;
  pool: WorkerPool;
  name: string;
  classes: PbGpuClass[];
  slots: Slot[];
  version: string;
  log: (line: string) => void;
  /** Who holds which slot across the gateways this runtime serves; one of its own when it serves one. */
  arbiter?: SlotArbiter;
}

const DEFAULT_HEARTBEAT_MS = 5_000;
const RECONNECT_DELAY_MS = 1_000;

export class Runtime implements SlotHolder {
  runtimeId = '';
  readonly name: string;
  private readonly arbiter: SlotArbiter;
  private readonly runs = new Map<string, Run>();
  private stream: WorkStream | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private reconnecting = false;
  private stopped = false;

  constructor(private readonly opts: RuntimeOptions) {
    this.name = `the gateway at ${opts.gateway.address}`;
    this.arbiter = opts.arbiter ?? new SlotArbiter();
    this.arbiter.add(this);
  }

  slotsTaken(slots: number[]): void {
    this.stream?.sendSlotsTaken(slots);
  }

  /** Register and open the Work stream; rejects with the gRPC error when the gateway can't be reached. */
  async connect(registerTimeoutMs: number): Promise<void> {
    const res = await this.opts.gateway.register(
      {
        name: this.opts.name,
        classes: this.opts.classes,
        capacity: this.opts.slots.length,
        version: this.opts.version,
        slots: this.opts.slots,
      },
      registerTimeoutMs,
      true,
    );
    this.runtimeId = res.runtimeId;
    this.openStream();
    this.scheduleHeartbeats(res.heartbeatIntervalMs > 0 ? res.heartbeatIntervalMs : DEFAULT_HEARTBEAT_MS);
  }

  /** Leaves the gateway; the workers are the caller's to end (`pool.shutdown()`), as other gateways may share them. */
  stop(): void {
    this.stopped = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    for (const run of this.runs.values()) run.cancel('cancelled', 'the runtime is shutting down');
    this.stream?.end();
    this.arbiter.remove(this);
    this.opts.gateway.close();
  }

  private openStream(): void {
    const stream = this.opts.gateway.openWork(this.runtimeId);
    this.stream = stream;
    stream.on('message', (msg: GatewayMessage) => this.onMessage(stream, msg));
    // What the other gateways hold, before any assignment of this one can meet it.
    this.arbiter.announce(this);
    stream.once('closed', (reason: string) => {
      if (this.stopped || this.stream !== stream) return;
      // The gateway fails every run of a closed stream (runtime_lost); stop their cells here too.
      this.opts.log(`lost the Work stream (${reason}); registering again`);
      for (const run of this.runs.values()) run.cancel('cancelled', 'the connection to the gateway was lost');
      this.reconnect();
    });
  }

  private onMessage(stream: WorkStream, msg: GatewayMessage): void {
    if (msg.assign) {
      const assignment = msg.assign;
      if (this.runs.has(assignment.runId)) return;
      const slot = assignment.slot ?? 0;
      const taken = this.arbiter.take(slot, this);
      if (!taken.ok) {
        // The gateway placed it before it heard the slot was taken: it puts the run back in line, nothing is lost.
        void stream.send({ runId: assignment.runId, refused: { reason: `slot ${slot} is held by a run of ${taken.heldBy}` } });
        return;
      }
      const { gateway, cache, overlays, sandbox, pool, name } = this.opts;
      const run = new Run(assignment, { gateway, cache, overlays, sandbox, pool, runtimeName: name }, stream);
      this.runs.set(assignment.runId, run);
      void run.execute().finally(() => {
        this.runs.delete(assignment.runId);
        this.arbiter.release(slot, this);
      });
    } else if (msg.cancel) {
      // The gateway enforces timeouts itself and says so with reason "timeout".
      const { runId, reason } = msg.cancel;
      if (reason === 'timeout') this.runs.get(runId)?.cancel('timeout', 'the cell ran past its timeout and was stopped');
      else this.runs.get(runId)?.cancel('cancelled', reason || 'cancelled by the user');
    }
  }

  private scheduleHeartbeats(intervalMs: number): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), intervalMs);
  }

  private async heartbeat(): Promise<void> {
    if (this.reconnecting || this.stopped) return;
    try {
      const res = await this.opts.gateway.heartbeat({
        runtimeId: this.runtimeId,
        busy: this.runs.size,
        warmWorkers: this.opts.pool.warmCount,
      });
      if (!res.known && !this.reconnecting && !this.stopped) {
        this.opts.log(`the gateway no longer knows runtime ${this.runtimeId}; registering again`);
        for (const run of this.runs.values()) run.cancel('cancelled', 'the gateway forgot this runtime');
        this.reconnect();
      }
    } catch (err) {
      const e = err as grpc.ServiceError;
      this.opts.log(`heartbeat to ${this.opts.gateway.address} failed: ${e.details || e.message}`);
    }
  }

  get address(): string {
    return this.opts.gateway.address;
  }

  /** Registers in the background until it works (a gateway not up when this runtime started). */
  keepTrying(): void {
    this.reconnect();
  }

  /** Register again until it works: the gateway may be restarting. */
  private reconnect(): void {
    if (this.reconnecting || this.stopped) return;
    this.reconnecting = true;
    const old = this.stream;
    this.stream = null;
    old?.end();
    const attempt = async (): Promise<void> => {
      if (this.stopped) return;
      try {
        await this.connect(10_000);
        this.reconnecting = false;
        this.opts.log(`registered again as ${this.runtimeId}`);
      } catch (err) {
        const e = err as grpc.ServiceError;
        this.opts.log(`could not register with ${this.opts.gateway.address}: ${e.details || e.message}; retrying`);
        setTimeout(() => void attempt(), RECONNECT_DELAY_MS);
      }
    };
    void attempt();
  }
}
