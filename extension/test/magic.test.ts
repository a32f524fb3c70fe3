import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { gpuClassOf, isGpuMagicLine, withGpuMagic } from '../src/magic';

describe('%%gpu magic', () => {
  it('prefixes a plain cell', () => {
    assert.equal(withGpuMagic('x = 1\nprint(x)', 'h100'), '%%gpu h100\nx = 1\nprint(x)');
    assert.equal(withGpuMagic('', 'h100'), '%%gpu h100\n');
  });

  it('replaces the class of a %%gpu cell and keeps its options', () => {
    assert.equal(withGpuMagic('%%gpu a100 --timeout 60\nx', 'h100'), '%%gpu h100 --timeout 60\nx');
    assert.equal(withGpuMagic('%%gpu\nx', 'h100'), '%%gpu h100\nx');
  });

  it('reads the class, and only from a real %%gpu line', () => {
    assert.equal(gpuClassOf('%%gpu h100\nx'), 'h100');
    assert.equal(gpuClassOf('x\n%%gpu h100'), null);
    assert.equal(gpuClassOf('%%gpux h100'), null);
    assert.equal(isGpuMagicLine('%%gpu h100'), true);
    assert.equal(isGpuMagicLine('%%time'), false);
  });
});
