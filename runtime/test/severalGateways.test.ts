// One runtime serving two gateways ("Several gateways"): the real runtime process with two fake gateways. It tells
// each which slots the other's runs hold, refuses an assignment to such a slot, and when one gateway goes away it
// stops that gateway's run, frees the slot and keeps serving the other.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { FakeGateway } from './fakeGateway.js';
import { RuntimeProcess, makeSnapshot, startRuntime, tempDir } from './helpers.js';

const a = new FakeGateway();
const b = new FakeGateway();
let runtime: RuntimeProcess;
let ids: string[];

before(async () => {
  await a.start();
  await b.start();
  runtime = await startRuntime(['--gateway', `${a.address},${b.address}`, '--cache', tempDir('cache'), '--warm', '1']);
  ids = (/id=(\S+)/.exec(runtime.readyLine)?.[1] ?? '').split(',');
});

after(async () => {
  await runtime?.stop();
  a.stop();
  b.stop();
});

test('registers with both gateways, one ready line naming both', () => {
  assert.equal(ids.length, 2);
  assert.match(runtime.readyLine, new RegExp(`gateway=${a.address},${b.address}$`));
  assert.equal(a.registrations.length, 1);
  assert.equal(b.registrations.length, 1);
});

test("a slot held by one gateway's run is refused to the other, which hears when it is free again", async () => {
  const onA = makeSnapshot(a, 'x = 1');
  const onB = makeSnapshot(b, 'x = 2');
  await a.assign(ids[0] as string, { runId: 'a-1', code: 'import time\nprint("holding", flush=True)\ntime.sleep(1)', snapshot: onA });
  await a.until('a-1', (e) => e.stream?.text === 'holding\n');
  await b.told([0]);
  await b.assign(ids[1] as string, { runId: 'b-1', code: 'x += 1', snapshot: onB });
  const refused = await b.finished('b-1');
  assert.equal(refused.length, 1, JSON.stringify(refused));
  assert.match(refused[0]?.refused?.reason ?? '', new RegExp(`slot 0 is held by a run of the gateway at ${a.address}`));
  assert.equal((await a.finished('a-1')).at(-1)?.done?.status, 'ok');
  await b.told([]);
  assert.deepEqual(a.slotsTaken.every((s) => s.length === 0), true, 'A never heard its own slot was taken');
  await b.assign(ids[1] as string, { runId: 'b-2', code: 'x += 1', snapshot: onB });
  assert.equal((await b.finished('b-2')).at(-1)?.done?.status, 'ok');
});

test("a gateway that goes away: its run is stopped, its slot freed, and the other gateway's runs go on", async () => {
  const onA = makeSnapshot(a, 'x = 1');
  const onB = makeSnapshot(b, 'x = 2');
  await a.assign(ids[0] as string, { runId: 'a-2', code: 'import time\nprint("running", flush=True)\ntime.sleep(60)', snapshot: onA });
  await a.until('a-2', (e) => e.stream?.text === 'running\n');
  await b.told([0]);
  a.stop();
  await b.told([]);
  await b.assign(ids[1] as string, { runId: 'b-3', code: 'x += 1\nprint("through b", x)', snapshot: onB });
  const events = await b.finished('b-3');
  assert.equal(events.at(-1)?.done?.status, 'ok', JSON.stringify(events));
  assert.ok(events.some((e) => e.stream?.text === 'through b 3\n'));
  assert.match(runtime.stderr(), /lost the Work stream/);
});
