import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseUsage, startOfToday, usageText } from '../src/usage';

const reply = {
  re: '1',
  ok: true,
  usage: {
    since: 0,
    total: { runs: 3, gpuSeconds: 12.5 },
    by: {
      notebook: [
        { key: 'ada\tlab/train.ipynb', runs: 2, gpuSeconds: 10 },
        { key: 'ada\t', runs: 1, gpuSeconds: 2.5 }
      ]
    }
  }
};

describe('the cost meter', () => {
  it("reads the gateway's count and names this notebook's share", () => {
    const summary = parseUsage(reply);
    assert.ok(summary);
    assert.equal(usageText(summary, 'lab/train.ipynb'), 'Today you used 13 GPU-s over 3 runs, 10 GPU-s in this notebook (as the gateway counts it).');
    assert.equal(usageText(summary, 'other.ipynb'), 'Today you used 13 GPU-s over 3 runs (as the gateway counts it).');
  });

  it('ignores what is not a usage reply', () => {
    assert.equal(parseUsage({ ok: true }), null);
    assert.equal(parseUsage({ usage: { total: { runs: 'x' } } }), null);
    assert.equal(parseUsage(null), null);
  });

  it('counts today from local midnight', () => {
    const noon = new Date(2026, 11, 2, 12, 30);
    assert.equal(startOfToday(noon), new Date(2026, 11, 2).getTime());
  });
});
