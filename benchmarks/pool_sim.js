// The pool on a simulated day (gateway/bench/poolSim.ts): the gateway's real Scheduler on simulated time and
// runtimes. Prints, as JSON lines: the full trace on 1,000 runtimes x 8 GPUs; then the smallest pool (runtimes of
// 8 GPUs) whose p95 queue wait is <= 2 s on the same trace, against the reserved baseline (one GPU per open session).
//   npm run build && node benchmarks/pool_sim.js [--sessions N] [--runtimes N] [--hours H]
'use strict';
const path = require('node:path');
const { FULL_TRACE, DEFAULT_POOL, makeTrace, simulate } = require(path.join(__dirname, '..', 'gateway/dist/bench/poolSim.js'));

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const trace = { ...FULL_TRACE, sessions: opt('sessions', FULL_TRACE.sessions), hours: opt('hours', FULL_TRACE.hours) };
const runtimes = opt('runtimes', 1000);
// --sizes A,B,...: simulate only these pool sizes (runtimes of 8), one JSON line each, instead of the search.
const sizesAt = args.indexOf('--sizes');
const sizes = sizesAt >= 0 ? args[sizesAt + 1].split(',').map(Number) : null;
const t0 = Date.now();
const cells = makeTrace(trace);
const round = (r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'number' ? Math.round(v * 1000) / 1000 : v]));
if (sizes !== null) {
  for (const n of sizes) {
    const r = simulate(cells, trace, { ...DEFAULT_POOL, runtimes: n });
    console.log(JSON.stringify({ case: `${n} runtimes x 8, ${trace.sessions} sessions`, ...round(r), pool_over_reserved: Math.round((r.poolGpus / r.reservedGpus) * 1000) / 1000, wall_s: (Date.now() - t0) / 1000 }));
  }
  process.exit(0);
}
const full = simulate(cells, trace, { ...DEFAULT_POOL, runtimes });
console.log(JSON.stringify({ case: `${runtimes} runtimes x 8, ${trace.sessions} sessions`, cells: cells.cells.length, ...round(full), wall_s: (Date.now() - t0) / 1000 }));

// Bisection on the pool size: the fewest runtimes whose p95 wait meets the goal, bracketed by the busiest hour's
// mean demand (no pool smaller than that can keep up) and 1.5 times it.
const peakBusy = full.peakHourUtilization * full.poolGpus;
let lo = Math.max(1, Math.floor(peakBusy / 8));
let hi = Math.min(runtimes, Math.ceil((1.5 * peakBusy) / 8));
while (hi < runtimes && simulate(cells, trace, { ...DEFAULT_POOL, runtimes: hi }).waitP95S > 2) hi = Math.min(runtimes, hi * 2);
let best = full;
while (lo < hi) {
  const mid = Math.floor((lo + hi) / 2);
  const r = simulate(cells, trace, { ...DEFAULT_POOL, runtimes: mid });
  if (r.waitP95S <= 2) {
    hi = mid;
    best = r;
  } else {
    lo = mid + 1;
  }
}
if (best.poolGpus !== hi * 8) best = simulate(cells, trace, { ...DEFAULT_POOL, runtimes: hi });
console.log(
  JSON.stringify({
    case: 'smallest pool with p95 wait <= 2 s',
    runtimes: hi,
    ...round(best),
    pool_over_reserved: Math.round((best.poolGpus / best.reservedGpus) * 1000) / 1000,
    wall_s: (Date.now() - t0) / 1000,
  }),
);
