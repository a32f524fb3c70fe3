// The pool simulation on a small trace: the real Scheduler on simulated time loses no run, keeps FIFO per session,
// and the pool of the trace is smaller than its reserved baseline; with the real autoscaler and a simulated provider
// the pool follows the day's demand. (Figures, not timings: simulated time is exact.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_POOL, FULL_TRACE, TraceOptions, makeTrace, simulate } from '../bench/poolSim.js';

const SMALL: TraceOptions = { ...FULL_TRACE, sessions: 200, hours: 6, activeHours: [1, 2], seed: 7 };

test('a small trace on a small pool: every cell runs, waits are short, the pool is a fraction of the reserved GPUs', async () => {
  const trace = makeTrace(SMALL);
  const report = await simulate(trace, SMALL, { ...DEFAULT_POOL, runtimes: 8, gpusPerRuntime: 4 });
  assert.equal(report.runs, trace.cells.length, 'no run lost');
  assert.ok(report.reservedGpus > report.poolGpus, JSON.stringify(report));
  assert.ok(report.utilization > 0 && report.utilization <= 1 && report.peakHourUtilization <= 1 + 1e-9, JSON.stringify(report));
  assert.ok(report.waitP50S >= 0 && report.waitP50S <= report.waitP95S && report.waitP95S <= report.waitP99S);
  assert.ok(report.evictions > 0, 'a pool this small evicts idle workers');
  assert.ok(report.warmHits > 0, 'and still serves some cells warm');
});

test('an oversized pool never evicts and never makes a run wait', async () => {
  const trace = makeTrace(SMALL);
  const report = await simulate(trace, SMALL, { ...DEFAULT_POOL, runtimes: 50, gpusPerRuntime: 8 });
  assert.equal(report.runs, trace.cells.length);
  assert.equal(report.evictions, 0);
  assert.equal(report.waitP99S, 0);
});

test('the autoscaler grows the pool from a floor of one runtime as the day goes and gives hosts back: fewer GPU-hours, busier', async () => {
  const trace = makeTrace(SMALL);
  const fixed = await simulate(trace, SMALL, { ...DEFAULT_POOL, runtimes: 8, gpusPerRuntime: 4 });
  const elastic = await simulate(trace, SMALL, {
    ...DEFAULT_POOL,
    runtimes: 1,
    gpusPerRuntime: 4,
    elastic: { maxRuntimes: 12, bootS: [60, 120], scaleUpAfterS: 10, idleReleaseS: 120, targetUtilization: 0.8 },
  });
  assert.equal(elastic.runs, trace.cells.length, 'no run lost while hosts come and go');
  assert.ok(elastic.provided > 0 && elastic.peakRuntimes > 1 && elastic.peakRuntimes <= 13, JSON.stringify(elastic));
  assert.ok(elastic.gpuHours < fixed.gpuHours, `${elastic.gpuHours} GPU-hours elastic, ${fixed.gpuHours} fixed`);
  assert.ok(elastic.utilization > fixed.utilization, `${elastic.utilization} elastic, ${fixed.utilization} fixed`);
  assert.ok(elastic.utilization <= 1 && elastic.peakHourUtilization <= 1 + 1e-9, JSON.stringify(elastic));
});
