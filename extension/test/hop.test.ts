import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  addCost,
  bytesText,
  EMPTY_LEDGER,
  etaText,
  gpuSecondsText,
  IHopState,
  parseHop,
  parseLedger,
  phaseText,
  progressFraction,
  splitText,
  summaryText,
  whereText
} from '../src/hop';
import { statusText } from '../src/format';
import { IGpuClass } from '../src/tokens';

/** A payload as kernelhop/magics/hop_display.py publishes it. */
function payload(fields: Record<string, unknown>): unknown {
  return { version: 1, id: 'hop-1', gpu_class: 'h100', phase: 'upload', elapsed_s: 1.2, ...fields };
}

function hop(fields: Record<string, unknown>): IHopState {
  const parsed = parseHop(payload(fields));
  assert.ok(parsed);
  return parsed;
}

const SPLIT = { capture: 0.01, upload: 0, queue: 0, restore: 0.02, run: 0.1, return: 0.08 };

describe('hop display', () => {
  it('reads the kernel payload and refuses what it is not', () => {
    assert.equal(parseHop(null), null);
    assert.equal(parseHop({ ...(payload({}) as object), version: 2 }), null);
    assert.equal(parseHop(payload({ phase: 'teleport' })), null);
    const h = hop({ bytes_done: 5, bytes_total: 10, eta_s: 3, runtime: 'rt-1', simulated: true });
    assert.equal(h.bytesDone, 5);
    assert.equal(whereText(h), 'h100 on runtime rt-1 (simulated)');
    // Negative or non-numeric fields are not trusted: they read as zero.
    assert.equal(hop({ bytes_done: -3 }).bytesDone, 0);
  });

  it('says bytes done of total and the time left while a step moves bytes', () => {
    const h = hop({ bytes_done: 8 * 1024 * 1024, bytes_total: 32 * 1024 * 1024, eta_s: 2.6 });
    assert.equal(phaseText(h), 'uploading 8.0 MiB of 32.0 MiB, about 3 s left');
    assert.equal(progressFraction(h), 0.25);
    assert.equal(progressFraction(hop({ phase: 'run' })), null);
    assert.equal(phaseText(hop({ phase: 'queued', position: 2 })), 'queued, position 2');
    assert.equal(phaseText(hop({ phase: 'failed', error: 'gateway down' })), 'failed: gateway down');
  });

  it('words sizes and times left', () => {
    assert.equal(bytesText(512), '512 B');
    assert.equal(bytesText(1536), '1.5 KiB');
    assert.equal(etaText(null), '');
    assert.equal(etaText(0.2), 'less than a second left');
    assert.equal(etaText(42), 'about 42 s left');
    assert.equal(etaText(600), 'about 10 min left');
    assert.equal(gpuSecondsText(0.94), '0.9 GPU-s');
    assert.equal(gpuSecondsText(125.4), '125 GPU-s');
    assert.equal(gpuSecondsText(5400), '1.5 GPU-h');
  });

  it('gives the time split in the order the steps happen', () => {
    assert.equal(splitText(SPLIT), 'capture 0.01 · upload 0.00 · queue 0.00 · restore 0.02 · run 0.10 · return 0.08');
    const done = hop({ phase: 'done', split: SPLIT, total_s: 0.21, gpu_s: 0.2 });
    assert.equal(summaryText(done), `0.21 s: ${splitText(SPLIT)}`);
    assert.equal(progressFraction(done), null);
  });
});

describe('cost meter', () => {
  it('adds each hop to its cell and to the total', () => {
    let ledger = addCost(EMPTY_LEDGER, 'cell-a', 1.5);
    ledger = addCost(ledger, 'cell-a', 0.5);
    ledger = addCost(ledger, 'cell-b', 1);
    // A hop whose cell is unknown still counts in the total.
    ledger = addCost(ledger, null, 2);
    assert.deepEqual(ledger, { total: 5, cells: { 'cell-a': 2, 'cell-b': 1 } });
    assert.deepEqual(EMPTY_LEDGER, { total: 0, cells: {} });
  });

  it('reads metadata back defensively', () => {
    assert.deepEqual(parseLedger(undefined), EMPTY_LEDGER);
    assert.deepEqual(parseLedger({ total: 3, cells: { a: 1, b: 'x', c: -1 } }), { total: 3, cells: { a: 1 } });
  });
});

describe('status text with hops', () => {
  const h100: IGpuClass = { name: 'h100', runtimes: 1, capacity: 1, busy: 1, queued: 0, simulated: true };
  const status = { state: 'connected' as const, classes: [h100], detail: '' };

  it('says where the cell runs now and what the hop does', () => {
    const active = hop({ phase: 'run', runtime: 'rt-1', simulated: true });
    assert.equal(
      statusText(status, 'h100', { active, last: null, ledger: EMPTY_LEDGER }),
      'kernelhop: h100 on runtime rt-1 (simulated): running · h100 ×0 free (simulated)'
    );
  });

  it('gives the last hop split and the notebook GPU time once back home', () => {
    const last = hop({ phase: 'done', runtime: 'rt-1', split: SPLIT, total_s: 0.21, gpu_s: 0.2 });
    assert.equal(
      statusText(status, null, { active: null, last, ledger: { total: 0.2, cells: {} } }),
      `kernelhop: local · last hop 0.21 s: ${splitText(SPLIT)} · notebook 0.2 GPU-s · h100 ×0 free (simulated)`
    );
  });
});
