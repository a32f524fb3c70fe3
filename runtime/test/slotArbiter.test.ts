// The runtime as the arbiter of its slots across the gateways it serves ("Several gateways"): a slot held by one
// gateway's run is refused to the others, each gateway hears which slots the others hold, and only of changes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SlotArbiter, SlotHolder } from '../src/slotArbiter.js';

function holder(name: string): SlotHolder & { heard: number[][] } {
  const heard: number[][] = [];
  return { name, heard, slotsTaken: (slots) => heard.push(slots) };
}

test("a slot one gateway's run holds is refused to another until that run ends; each hears of the others' slots", () => {
  const arbiter = new SlotArbiter();
  const a = holder('the gateway at A');
  const b = holder('the gateway at B');
  arbiter.add(a);
  arbiter.add(b);
  assert.deepEqual(arbiter.take(0, a), { ok: true });
  assert.deepEqual(b.heard, [[0]], 'B hears slot 0 is taken');
  assert.deepEqual(a.heard, [[]], 'A holds it itself: nothing is taken from it');
  assert.deepEqual(arbiter.take(0, b), { ok: false, heldBy: 'the gateway at A' });
  // A gateway may place a second run on its own slot (the runtime's pool then picks another device).
  assert.deepEqual(arbiter.take(0, a), { ok: true });
  arbiter.release(0, a);
  assert.deepEqual(arbiter.take(0, b), { ok: false, heldBy: 'the gateway at A' }, 'still one run of A on it');
  arbiter.release(0, a);
  assert.deepEqual(b.heard, [[0], []], 'free again, and B was told only of the two changes');
  assert.deepEqual(arbiter.take(0, b), { ok: true });
  assert.deepEqual(arbiter.take(1, a), { ok: true });
  assert.deepEqual(a.heard.at(-1), [0]);
  assert.deepEqual(b.heard.at(-1), [1]);
  // A stream opened anew hears the whole set again.
  arbiter.announce(a);
  assert.deepEqual(a.heard.slice(-2), [[0], [0]]);
  // A release by a gateway that does not hold the slot changes nothing.
  arbiter.release(0, a);
  assert.deepEqual(arbiter.takenFor(a), [0]);
});
