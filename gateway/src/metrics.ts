// What the gateway exposes at GET /metrics (Prometheus text format, admin token as bearer): the queue and the slots
// as they are at scrape time, and counters and histograms of what runs did. One registry per gateway, so that two
// gateways in one process (the tests) do not share counts.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ClassInfo } from './scheduler.js';

/** Queue waits and run times span milliseconds (a warm slot) to hours (a long training cell). */
const SECONDS_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400];

export interface RunEndSample {
  user: string;
  gpuClass: string;
  outcome: string;
  gpuSeconds: number;
  /** The runtime's and the worker's `*_s` timings of a finished run (phase → seconds), `*_bytes` sizes. */
  timings: Record<string, unknown>;
}

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly queueWait: Histogram<'gpu_class'>;
  private readonly runSeconds: Histogram<'gpu_class' | 'outcome'>;
  private readonly phaseSeconds: Histogram<'phase'>;
  private readonly bytes: Counter<'link' | 'direction'>;
  private readonly gpuSeconds: Counter<'user' | 'gpu_class'>;
  private readonly evictions: Counter<'gpu_class'>;

  constructor(classes: () => Record<string, ClassInfo>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'kernelhop_gateway_' });
    const registers = [this.registry];
    new Gauge({
      name: 'kernelhop_queue_depth',
      help: 'Runs waiting for a slot, per GPU class.',
      labelNames: ['gpu_class'],
      registers,
      collect() {
        this.reset();
        for (const [name, c] of Object.entries(classes())) this.set({ gpu_class: name }, c.queued);
      },
    });
    new Gauge({
      name: 'kernelhop_slots',
      help: 'Slots of the registered runtimes, per GPU class and state (busy: a run holds it; free: nobody does).',
      labelNames: ['gpu_class', 'state'],
      registers,
      collect() {
        this.reset();
        for (const [name, c] of Object.entries(classes())) {
          this.set({ gpu_class: name, state: 'busy' }, c.busy);
          this.set({ gpu_class: name, state: 'free' }, Math.max(0, c.capacity - c.busy));
        }
      },
    });
    new Gauge({
      name: 'kernelhop_runtimes',
      help: 'Registered runtimes offering each GPU class.',
      labelNames: ['gpu_class'],
      registers,
      collect() {
        this.reset();
        for (const [name, c] of Object.entries(classes())) this.set({ gpu_class: name }, c.runtimes);
      },
    });
    this.queueWait = new Histogram({
      name: 'kernelhop_queue_wait_seconds',
      help: 'From a run being submitted to a runtime taking it.',
      labelNames: ['gpu_class'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.runSeconds = new Histogram({
      name: 'kernelhop_run_seconds',
      help: 'GPU-seconds of one run: from a runtime taking it to its end.',
      labelNames: ['gpu_class', 'outcome'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.phaseSeconds = new Histogram({
      name: 'kernelhop_hop_phase_seconds',
      help: "The phases of finished runs as the runtime and worker timed them (fetch, restore, run, capture, upload, total).",
      labelNames: ['phase'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.bytes = new Counter({
      name: 'kernelhop_bytes_total',
      help: 'Blob bytes moved through the gateway: link ws or http (kernels: frames, uploads) or grpc (runtimes); direction in (stored) or out (served).',
      labelNames: ['link', 'direction'],
      registers,
    });
    this.gpuSeconds = new Counter({
      name: 'kernelhop_gpu_seconds_total',
      help: 'GPU-seconds used, per user and GPU class (as `kernelhop usage` counts them).',
      labelNames: ['user', 'gpu_class'],
      registers,
    });
    this.evictions = new Counter({
      name: 'kernelhop_evictions_total',
      help: 'Warm workers ended to free their slot for a waiting run of another session.',
      labelNames: ['gpu_class'],
      registers,
    });
  }

  /** Provided runtimes (elastic/), per class and state, read at scrape time. */
  watchElastic(counts: () => Array<{ gpuClass: string; state: string; n: number }>): void {
    new Gauge({
      name: 'kernelhop_elastic_runtimes',
      help: 'Runtimes the provider started, per GPU class and state (starting: not registered yet; up).',
      labelNames: ['gpu_class', 'state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const c of counts()) this.set({ gpu_class: c.gpuClass, state: c.state }, c.n);
      },
    });
  }

  runStarted(gpuClass: string, waitedSeconds: number): void {
    this.queueWait.observe({ gpu_class: gpuClass }, waitedSeconds);
  }

  runEnded(s: RunEndSample): void {
    this.runSeconds.observe({ gpu_class: s.gpuClass, outcome: s.outcome }, s.gpuSeconds);
    this.gpuSeconds.inc({ user: s.user, gpu_class: s.gpuClass }, s.gpuSeconds);
    for (const [key, value] of Object.entries(s.timings)) {
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) continue;
      if (key.endsWith('_s')) this.phaseSeconds.observe({ phase: key.slice(0, -2) }, value);
    }
  }

  moved(link: 'ws' | 'http' | 'grpc', direction: 'in' | 'out', bytes: number): void {
    if (bytes > 0) this.bytes.inc({ link, direction }, bytes);
  }

  evicted(gpuClass: string): void {
    this.evictions.inc({ gpu_class: gpuClass });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
