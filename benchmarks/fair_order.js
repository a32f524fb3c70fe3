// The fair-share order at a decision: the heap (gateway/src/runs/fairShare.ts UsageOrder) against the naive sort of
// every waiting user by usage now, in the same run, on the same histories. Per N waiting users, a third of them with
// runs in flight (their usage grows between decisions), decisions 50 ms apart, each taking the first user and putting
// it back with a new head, as a saturated pool's decision does. Prints one JSON line per N.
//   npm run build && node benchmarks/fair_order.js [--users 100,1000,10000] [--decisions 20000]
'use strict';
const path = require('node:path');
const { FairShare, UsageOrder } = require(path.join(__dirname, '..', 'gateway/dist/src/runs/fairShare.js'));
// The pool simulator's seeded generator, so the histories are the same in every run.
const { rng } = require(path.join(__dirname, '..', 'gateway/dist/bench/poolSim.js'));

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const sizes = arg('users', '100,1000,10000').split(',').map(Number);
const decisions = Number(arg('decisions', '20000'));

/** N users with a past (decayed usage) and, for a third, a run in flight; a clock that decisions move on. */
function setup(n) {
  let t = 0;
  const clock = { now: () => t, after: () => ({ cancel() {} }) };
  const fs = new FairShare(clock);
  const r = rng(n);
  for (let i = 0; i < n; i++) {
    const at = Math.floor(r() * 3_600_000);
    t = at;
    fs.onRunStart(`u${i}`, at);
    t = at + Math.floor(r() * 600_000);
    fs.onRunEnd({ user: `u${i}`, gpuClass: 'gpu', runtime: 'r', gpuSeconds: (t - at) / 1000 }, at);
  }
  t = 4_000_000;
  for (let i = 0; i < n; i += 3) fs.onRunStart(`u${i}`, t - Math.floor(r() * 60_000));
  return { fs, advance: (ms) => (t += ms), now: () => t };
}

function time(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

for (const n of sizes) {
  const k = Math.max(200, Math.floor(decisions / Math.max(1, n / 1000)));
  const picks = [[], []];
  // Naive: usage of every waiting user now, sorted, the first taken (what the scheduler did before the heap).
  const a = setup(n);
  const heads = new Map(Array.from({ length: n }, (_, i) => [`u${i}`, i]));
  let seq = n;
  const naiveMs = time(() => {
    for (let d = 0; d < k; d++) {
      a.advance(50);
      const now = a.now();
      const usage = new Map([...heads.keys()].map((u) => [u, a.fs.usage(u, now)]));
      const first = [...heads.keys()].sort((x, y) => usage.get(x) - usage.get(y) || heads.get(x) - heads.get(y))[0];
      picks[0].push(first);
      heads.set(first, seq++);
    }
  });
  const b = setup(n);
  const order = new UsageOrder(b.fs);
  for (let i = 0; i < n; i++) order.set(`u${i}`, i, b.now());
  seq = n;
  const heapMs = time(() => {
    for (let d = 0; d < k; d++) {
      b.advance(50);
      const now = b.now();
      const first = order.shift(now);
      picks[1].push(first);
      order.set(first, seq++, now);
    }
  });
  const same = picks[0].every((u, i) => u === picks[1][i]);
  console.log(
    JSON.stringify({
      waiting_users: n,
      decisions: k,
      naive_us_per_decision: Math.round((naiveMs * 1000) / k),
      heap_us_per_decision: Math.round(((heapMs * 1000) / k) * 100) / 100,
      naive_over_heap: Math.round((naiveMs / heapMs) * 10) / 10,
      same_order: same,
    }),
  );
}
