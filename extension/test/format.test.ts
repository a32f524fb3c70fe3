import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { classLabel, statusText, statusTitle } from '../src/format';
import { IGpuClass } from '../src/tokens';

const h100: IGpuClass = { name: 'h100', runtimes: 1, capacity: 1, busy: 0, queued: 0, simulated: false };

describe('status text', () => {
  it('says where the notebook runs and what is free', () => {
    const status = { state: 'connected' as const, classes: [h100], detail: '' };
    assert.equal(statusText(status, null), 'kernelhop: local · h100 ×1 free');
    assert.equal(statusText(status, 'h100'), 'kernelhop: on h100 · h100 ×1 free');
  });

  it('names the down and refused states plainly', () => {
    assert.equal(statusText({ state: 'down', classes: [], detail: 'x' }, null), 'kernelhop: gateway down');
    assert.equal(statusText({ state: 'refused', classes: [], detail: 'x' }, null), 'kernelhop: token refused');
    assert.match(statusTitle({ state: 'down', classes: [], detail: 'ECONNREFUSED' }), /ECONNREFUSED.*kernelhop gateway/);
  });

  it('marks simulated classes and queues', () => {
    assert.equal(classLabel({ ...h100, busy: 1, queued: 2, simulated: true }), 'h100 ×0 free, 2 queued (simulated)');
  });
});
