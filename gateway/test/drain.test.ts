// A drained runtime (the autoscaler letting it go): no run is placed on it, its idle warm worker ends at once, its
// running cell finishes there and its slot does not stay warm; taken back, it serves again. Runs pack onto the
// fullest runtime with a free slot.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeDigest } from '@kernelhop/kernel-snapshot';
import { Clock, Timer } from '../src/runs/clock.js';
import { DownMessage, Job, Scheduler } from '../src/scheduler.js';

const SNAPSHOT = makeDigest('0'.repeat(64), 1);
const clock: Clock = { now: () => 0, after: (): Timer => ({ cancel: () => undefined }) };

function job(id: string, session: string, seq: number): Job {
  return {
    id,
    user: 'ann',
    session,
    gpuClass: 'gpu',
    seq,
    submittedAt: 0,
    notebook: '',
    cell: '',
    code: '',
    snapshot: SNAPSHOT,
    timeoutS: 0,
    reach: null,
    readable: new Set(),
    proven: new Set(),
    queued: () => undefined,
    dispatched: () => undefined,
    requeued: () => undefined,
    event: () => undefined,
    ended: () => undefined,
    lost: (code) => assert.fail(`lost: ${code}`),
  };
}

test('a drained runtime takes no run and keeps no worker warm; taken back it serves again; runs pack', () => {
  const sched = new Scheduler({ clock, log: () => undefined });
  const sent = new Map<string, DownMessage[]>();
  const add = (name: string, slots: number): string => {
    const id = sched.register({ name, classes: [{ name: 'gpu', simulated: true }], capacity: slots, version: 't' }, 'c');
    sent.set(name, []);
    sched.attachWork(id, { send: (m) => (sent.get(name) as DownMessage[]).push(m), close: () => undefined });
    return id;
  };
  const a = add('a', 2);
  add('b', 2);
  const done = (rt: string, runId: string): void => sched.runtimeEvent(rt, runId, { kind: 'done', status: 'ok', snapshot: SNAPSHOT, timingsJson: '' });
  sched.enqueue(job('r1', 's1', sched.ticket()));
  sched.enqueue(job('r2', 's2', sched.ticket()));
  // Packed: the second run goes where the first is, not to the empty runtime.
  assert.deepEqual([sent.get('a')?.length, sent.get('b')?.length], [2, 0]);
  done(a, 'r1');
  assert.equal(sched.sessionStatus('s1').state, 'warm');
  sched.drain(a, true);
  assert.equal(sched.sessionStatus('s1').state, 'expired', 'its idle worker ended');
  assert.equal(sched.runtimesOf('c').find((r) => r.id === a)?.draining, true);
  // s1's next cell goes elsewhere, though a slot on the drained runtime is free.
  sched.enqueue(job('r3', 's1', sched.ticket()));
  assert.equal(sent.get('b')?.length, 1);
  done(a, 'r2');
  assert.equal(sched.sessionStatus('s2').state, 'expired', 'no worker stays warm on a drained runtime');
  assert.equal(sched.runtimesOf('c').find((r) => r.id === a)?.busy, 0);
  sched.enqueue(job('r4', 's4', sched.ticket()));
  sched.enqueue(job('r5', 's5', sched.ticket()));
  assert.equal(sched.classes().gpu?.queued, 1, 'b is full and a is drained: one run waits');
  sched.drain(a, false);
  assert.equal(sent.get('a')?.filter((m) => m.kind === 'assign').length, 3, 'taken back, it serves the waiting run');
  assert.equal(sched.classes().gpu?.queued, 0);
  sched.close();
});
