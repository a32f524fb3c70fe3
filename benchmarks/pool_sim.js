// The pool on a simulated day (gateway/bench/poolSim.ts): the gateway's real Scheduler on simulated time and
// runtimes. Prints, as JSON lines: the full trace on 1,000 runtimes x 8 GPUs; then the smallest pool (runtimes of
// 8 GPUs) whose p95 queue wait is <= 2 s on the same trace, against the reserved baseline (one GPU per open session).
//   npm run build && node benchmarks/pool_sim.js [--sessions N] [--runtimes N] [--hours H] [--think-minutes M]
// --think-minutes M: mean thinking between bursts (4); 12 leaves the reserved GPUs ~8 % used (reservedUtilization),
// the figure the brief's pooling goal is set against, where 4 leaves them ~19 % used.
// --sizes A,B,...: only these fixed pools, one line each. --elastic (with or without --sizes): also the real
// autoscaler (gateway/src/elastic/autoscaler.ts) growing and shrinking the pool from a floor of --floor runtimes (2)
// up to --max-runtimes (200), hosts booting in --boot LO,HI seconds (60,120), --target-utilization F (0.9; 0: off),
// --idle-release S (300), --scale-up-after S (10); then one line comparing it with the first fixed pool.
'use strict';
const path = require('node:path');
const { FULL_TRACE, DEFAULT_POOL, makeTrace, simulate } = require(path.join(__dirname, '..', 'gateway/dist/bench/poolSim.js'));

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const list = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1].split(',').map(Number) : fallback;
};
const trace = {
  ...FULL_TRACE,
  sessions: opt('sessions', FULL_TRACE.sessions),
  hours: opt('hours', FULL_TRACE.hours),
  thinkMinutes: opt('think-minutes', FULL_TRACE.thinkMinutes),
};
const runtimes = opt('runtimes', 1000);
const sizes = list('sizes', null);
const target = opt('target-utilization', 0.9);
const elastic = args.includes('--elastic')
  ? {
      maxRuntimes: opt('max-runtimes', 200),
      bootS: list('boot', [60, 120]),
      scaleUpAfterS: opt('scale-up-after', 10),
      idleReleaseS: opt('idle-release', 300),
      ...(target > 0 ? { targetUtilization: target } : {}),
    }
  : null;
const t0 = Date.now();
const cells = makeTrace(trace);
const round = (r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'number' ? Math.round(v * 1000) / 1000 : v]));
const ratio = (a, b) => Math.round((a / b) * 1000) / 1000;

async function main() {
  if (sizes !== null || elastic !== null) {
    const fixed = [];
    for (const n of sizes ?? []) {
      const r = await simulate(cells, trace, { ...DEFAULT_POOL, runtimes: n });
      fixed.push(r);
      console.log(JSON.stringify({ case: `${n} runtimes x 8, ${trace.sessions} sessions`, ...round(r), pool_over_reserved: ratio(r.poolGpus, r.reservedGpus), wall_s: (Date.now() - t0) / 1000 }));
    }
    if (elastic === null) return;
    const floor = opt('floor', 2);
    const e = await simulate(cells, trace, { ...DEFAULT_POOL, runtimes: floor, elastic });
    console.log(JSON.stringify({ case: `elastic: floor ${floor} runtimes x 8, ${trace.sessions} sessions`, elastic, ...round(e), wall_s: (Date.now() - t0) / 1000 }));
    const base = fixed[0];
    if (base !== undefined) {
      console.log(
        JSON.stringify({
          case: `elastic against ${base.poolGpus / 8} fixed runtimes`,
          gpu_hours: [round(e).gpuHours, round(base).gpuHours],
          gpu_hours_elastic_over_fixed: ratio(e.gpuHours, base.gpuHours),
          gpu_hours_over_reserved: [ratio(e.gpuHours, e.reservedGpuHours), ratio(base.gpuHours, base.reservedGpuHours)],
          utilization: [round(e).utilization, round(base).utilization],
          wait_p95_s: [round(e).waitP95S, round(base).waitP95S],
          wait_p99_s: [round(e).waitP99S, round(base).waitP99S],
        }),
      );
    }
    return;
  }
  const full = await simulate(cells, trace, { ...DEFAULT_POOL, runtimes });
  console.log(JSON.stringify({ case: `${runtimes} runtimes x 8, ${trace.sessions} sessions`, cells: cells.cells.length, ...round(full), wall_s: (Date.now() - t0) / 1000 }));

  // Bisection on the pool size: the fewest runtimes whose p95 wait meets the goal, bracketed by the busiest hour's
  // mean demand (no pool smaller than that can keep up) and 1.5 times it.
  const peakBusy = full.peakHourUtilization * full.poolGpus;
  let lo = Math.max(1, Math.floor(peakBusy / 8));
  let hi = Math.min(runtimes, Math.ceil((1.5 * peakBusy) / 8));
  while (hi < runtimes && (await simulate(cells, trace, { ...DEFAULT_POOL, runtimes: hi })).waitP95S > 2) hi = Math.min(runtimes, hi * 2);
  let best = full;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const r = await simulate(cells, trace, { ...DEFAULT_POOL, runtimes: mid });
    if (r.waitP95S <= 2) {
      hi = mid;
      best = r;
    } else {
      lo = mid + 1;
    }
  }
  if (best.poolGpus !== hi * 8) best = await simulate(cells, trace, { ...DEFAULT_POOL, runtimes: hi });
  console.log(
    JSON.stringify({
      case: 'smallest pool with p95 wait <= 2 s',
      runtimes: hi,
      ...round(best),
      pool_over_reserved: ratio(best.poolGpus, best.reservedGpus),
      wall_s: (Date.now() - t0) / 1000,
    }),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
