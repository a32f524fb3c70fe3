// The pool simulation on a small trace: the real Scheduler on simulated time loses no run, keeps FIFO per session,
// and the pool of the trace is smaller than its reserved baseline. (Figures, not timings: simulated time is exact.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_POOL, FULL_TRACE, TraceOptions, makeTrace, simulate } from '../bench/poolSim.js';

const SMALL: TraceOptions = { ...FULL_TRACE, sessions: 200, hours: 6, activeHours: [1, 2], seed: 7 };

test('a small trace on a small pool: every cell runs, waits are short, the pool is a fraction of the reserved GPUs', () => {
  const trace = makeTrace(SMALL);
  const report = simulate(trace, SMALL, { ...DEFAULT_POOL, runtimes: 8, gpusPerRuntime: 4 });
  assert.equal(report.runs, trace.cells.length, 'no run lost');
  assert.ok(report.reservedGpus > report.poolGpus, JSON.stringify(report));
  assert.ok(report.utilization > 0 && report.utilization <= 1 && report.peakHourUtilization <= 1 + 1e-9, JSON.stringify(report));
  assert.ok(report.waitP50S >= 0 && report.waitP50S <= report.waitP95S && report.waitP95S <= report.waitP99S);
  assert.ok(report.evictions > 0, 'a pool this small evicts idle workers');
  assert.ok(report.warmHits > 0, 'and still serves some cells warm');
});

test('an oversized pool never evicts and never makes a run wait', () => {
  const trace = makeTrace(SMALL);
  const report = simulate(trace, SMALL, { ...DEFAULT_POOL, runtimes: 50, gpusPerRuntime: 8 });
  assert.equal(report.runs, trace.cells.length);
  assert.equal(report.evictions, 0);
  assert.equal(report.waitP99S, 0);
});
