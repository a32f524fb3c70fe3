// The fast fair-share order (runs/fairShare.ts UsageOrder, and the scheduler's rounds over it) against the naive one:
// every waiting user's usage computed now and sorted, one run per user per round, FIFO within a user, per-user slot
// limits. fast-check drives random histories on a manual clock; any difference is a failure with its shrunk history.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { BareJob, SNAPSHOT } from '../bench/poolSim.js';
import { Clock, Timer } from '../src/runs/clock.js';
import { FairShare, UsageOrder } from '../src/runs/fairShare.js';
import { DownMessage, Job, POSITIONS_BATCH_MS, Scheduler, WorkLink } from '../src/scheduler.js';

class ManualClock implements Clock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void; live: boolean }> = [];

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void): Timer {
    const timer = { at: this.t + ms, fn, live: true };
    this.timers.push(timer);
    return { cancel: () => (timer.live = false) };
  }

  advance(ms: number): void {
    const until = this.t + ms;
    for (;;) {
      const due = this.timers.filter((x) => x.live && x.at <= until).sort((a, b) => a.at - b.at)[0];
      if (due === undefined) break;
      due.live = false;
      this.t = Math.max(this.t, due.at);
      due.fn();
    }
    this.timers = this.timers.filter((x) => x.live);
    this.t = until;
  }
}

const USERS = ['u0', 'u1', 'u2', 'u3', 'u4', 'u5'];
const user = fc.constantFrom(...USERS);
// Times that make ties likely (whole seconds, repeated) as well as arbitrary ones, and a half-life or more.
const advance = fc.oneof(fc.constantFrom(0, 1000, 2000), fc.integer({ min: 0, max: 5_000_000 }));

/** The naive order: usage now, then the head's place in line. */
function naive(fs: FairShare, heads: Map<string, number>, now: number): string[] {
  return [...heads.keys()].sort((a, b) => fs.usage(a, now) - fs.usage(b, now) || (heads.get(a) as number) - (heads.get(b) as number));
}

type OrderOp =
  | { op: 'advance'; ms: number }
  | { op: 'start' | 'end' | 'wait' | 'leave' | 'first'; user: string }
  | { op: 'all' };

test('UsageOrder takes users in the naive order, at any time, whatever their runs did', () => {
  const few = fc.constantFrom('u0', 'u1', 'u2');
  const on = (op: 'start' | 'end' | 'wait' | 'leave' | 'first'): fc.Arbitrary<OrderOp> => few.map((u) => ({ op, user: u }));
  const ops: fc.Arbitrary<OrderOp> = fc.oneof(
    { weight: 4, arbitrary: advance.map((ms) => ({ op: 'advance' as const, ms })) },
    { weight: 3, arbitrary: on('start') },
    { weight: 3, arbitrary: on('end') },
    { weight: 2, arbitrary: on('wait') },
    { weight: 1, arbitrary: on('leave') },
    { weight: 3, arbitrary: on('first') },
    { weight: 1, arbitrary: fc.constant({ op: 'all' as const }) },
  );
  fc.assert(
    fc.property(fc.array(ops, { maxLength: 120, size: 'max' }), (history) => {
      const clock = new ManualClock();
      const fs = new FairShare(clock);
      const order = new UsageOrder(fs);
      const starts = new Map<string, number[]>();
      const heads = new Map<string, number>();
      let seq = 0;
      for (const h of history) {
        const now = clock.now();
        switch (h.op) {
          case 'advance':
            clock.advance(h.ms);
            break;
          case 'start':
            fs.onRunStart(h.user, now);
            (starts.get(h.user) ?? starts.set(h.user, []).get(h.user) as number[]).push(now);
            break;
          case 'end': {
            const at = starts.get(h.user)?.shift();
            if (at !== undefined) fs.onRunEnd({ user: h.user, gpuClass: 'c', runtime: 'r', gpuSeconds: (now - at) / 1000 }, at);
            break;
          }
          case 'wait':
            // A new head (a later run, or an earlier one checked late) for a waiting user, or a new waiting user.
            heads.set(h.user, seq);
            order.set(h.user, seq++, now);
            break;
          case 'leave':
            heads.delete(h.user);
            order.delete(h.user);
            break;
          case 'first': {
            const expected = naive(fs, heads, now)[0];
            const got = order.shift(now);
            assert.equal(got, expected);
            if (got !== undefined) order.set(got, heads.get(got) as number, now);
            break;
          }
          case 'all': {
            const expected = naive(fs, heads, now);
            const got: string[] = [];
            for (let u = order.shift(now); u !== undefined; u = order.shift(now)) got.push(u);
            assert.deepEqual(got, expected);
            for (const u of got) order.set(u, heads.get(u) as number, now);
            break;
          }
        }
        assert.equal(order.size, heads.size);
      }
    }),
    { numRuns: 500 },
  );
});

class TestJob extends BareJob implements Job {
  /** The last place in line the scheduler told it. */
  position = 0;

  queued(position: number): void {
    this.position = position;
  }
  dispatched(): void {}
  requeued(): void {}
  event(): void {}
  ended(): void {}
  lost(code: string): void {
    throw new Error(`lost: ${code}`);
  }
}

type PoolOp =
  | { op: 'advance'; ms: number }
  | { op: 'submit'; user: string }
  | { op: 'finish'; pick: number }
  | { op: 'runtime'; slots: number }
  | { op: 'limit'; user: string; slots: number | null };

test('the scheduler serves waiting runs in the naive fair-share order: rounds of one run per user, FIFO, limits', () => {
  const ops: fc.Arbitrary<PoolOp> = fc.oneof(
    { weight: 2, arbitrary: advance.map((ms) => ({ op: 'advance' as const, ms })) },
    { weight: 4, arbitrary: user.map((u) => ({ op: 'submit' as const, user: u })) },
    { weight: 3, arbitrary: fc.nat(50).map((pick) => ({ op: 'finish' as const, pick })) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }).map((slots) => ({ op: 'runtime' as const, slots })) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('limit' as const), user, slots: fc.option(fc.integer({ min: 0, max: 2 })) }) },
  );
  fc.assert(
    fc.property(fc.array(ops, { maxLength: 100, size: 'max' }), (history) => {
      const clock = new ManualClock();
      const limits = new Map<string, number>();
      const assigned: Array<{ runtime: string; runId: string }> = [];
      // Warm grace 0: a finished run's slot is free at once, so the model needs no warm workers.
      const sched = new Scheduler({ clock, warmGraceMs: 0, slotLimit: (u) => limits.get(u) ?? Infinity, log: () => undefined });
      const jobs = new Map<string, TestJob>();
      const waiting = new Map<string, TestJob[]>();
      const running: Array<{ runtime: string; job: TestJob }> = [];
      const held = new Map<string, number>();
      let free = 0;
      let n = 0;

      /** What the rules say the next decision dispatches, given the state before it. */
      const expected = (): string[] => {
        const out: string[] = [];
        const lines = new Map([...waiting].map(([u, l]) => [u, [...l]]));
        const h = new Map(held);
        for (let placed = true; placed && free > out.length; ) {
          placed = false;
          const heads = new Map([...lines].filter(([, l]) => l.length > 0).map(([u, l]) => [u, (l[0] as TestJob).seq]));
          for (const u of naive(sched.fairShare, heads, clock.now())) {
            if (free === out.length) break;
            if ((h.get(u) ?? 0) >= (limits.get(u) ?? Infinity)) continue;
            out.push((lines.get(u) as TestJob[]).shift()?.id as string);
            h.set(u, (h.get(u) ?? 0) + 1);
            placed = true;
          }
        }
        return out;
      };
      const decide = (fn: () => void): void => {
        assigned.length = 0;
        fn();
        // Usage as the decision saw it: a run ending changed it before the pump, a run starting leaves it as it is.
        const want = expected();
        assert.deepEqual(assigned.map((a) => a.runId), want);
        for (const a of assigned) {
          const job = jobs.get(a.runId) as TestJob;
          (waiting.get(job.user) as TestJob[]).shift();
          running.push({ runtime: a.runtime, job });
          held.set(job.user, (held.get(job.user) ?? 0) + 1);
          free -= 1;
        }
      };
      for (const h of history) {
        switch (h.op) {
          case 'advance':
            clock.advance(h.ms);
            break;
          case 'submit': {
            const job = new TestJob(`r${n}`, h.user, `s${n}`, sched.ticket(), clock.now());
            n += 1;
            jobs.set(job.id, job);
            (waiting.get(h.user) ?? waiting.set(h.user, []).get(h.user) as TestJob[]).push(job);
            decide(() => sched.enqueue(job));
            break;
          }
          case 'finish': {
            if (running.length === 0) break;
            const [r] = running.splice(h.pick % running.length, 1);
            const { runtime, job } = r as { runtime: string; job: TestJob };
            held.set(job.user, (held.get(job.user) as number) - 1);
            free += 1;
            decide(() => sched.runtimeEvent(runtime, job.id, { kind: 'done', status: 'ok', snapshot: SNAPSHOT, timingsJson: '' }));
            break;
          }
          case 'runtime': {
            const id = sched.register({ name: `rt${n++}`, classes: [{ name: 'gpu', simulated: true }], capacity: h.slots, version: 't' }, 'c');
            const link: WorkLink = {
              send: (msg: DownMessage) => {
                if (msg.kind === 'assign') assigned.push({ runtime: id, runId: msg.runId });
              },
              close: () => undefined,
            };
            free += h.slots;
            decide(() => sched.attachWork(id, link));
            break;
          }
          case 'limit':
            // A limit takes effect at the next decision, as the gateway's user_limit does.
            if (h.slots === null) limits.delete(h.user);
            else limits.set(h.user, h.slots);
            break;
        }
        // The positions the queue tells (the naive order) agree with the order the fast path keeps.
        assert.deepEqual(sched.usersInOrder('gpu'), naive(sched.fairShare, new Map([...waiting].filter(([, l]) => l.length > 0).map(([u, l]) => [u, (l[0] as TestJob).seq])), clock.now()));
      }
      // A last run asked for arms a batch of positions: each waiting run is then told its place in the order of
      // service (rounds of one run per user, users in the naive order at the batch's time).
      const last = new TestJob(`r${n}`, 'u0', `s${n}`, sched.ticket(), clock.now());
      jobs.set(last.id, last);
      (waiting.get('u0') ?? waiting.set('u0', []).get('u0') as TestJob[]).push(last);
      decide(() => sched.enqueue(last));
      clock.advance(POSITIONS_BATCH_MS);
      const lines = naive(sched.fairShare, new Map([...waiting].filter(([, l]) => l.length > 0).map(([u, l]) => [u, (l[0] as TestJob).seq])), clock.now()).map(
        (u) => waiting.get(u) as TestJob[],
      );
      const served: TestJob[] = [];
      for (let round = 0; served.length < [...waiting.values()].flat().length; round++) for (const l of lines) if (l[round]) served.push(l[round] as TestJob);
      assert.deepEqual(served.map((j) => j.position), served.map((_, i) => i + 1));
      sched.close();
    }),
    { numRuns: 60 },
  );
});
