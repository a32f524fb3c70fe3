import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { describe as describeSnapshot, diffPair, historyOf, parseSnapshotList, toggleSelection } from '../src/snapshotModel';

function summary(id: string, created: string, fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id,
    owner: 'alice',
    author: 'alice',
    key: 'k',
    key_vouched: true,
    imported: false,
    shared: false,
    manifest: 'm',
    parents: [],
    created,
    message: '',
    notebook: '/srv/notebooks/work/a.ipynb',
    cells: 1,
    size_bytes: 2048,
    ...fields
  };
}

const REPLY = {
  re: '1',
  ok: true,
  snapshots: [
    summary('aaaaaaaaaaaaaaaa', '2026-11-27T20:00:00.000000Z'),
    summary('bbbbbbbbbbbbbbbb', '2026-11-27T21:00:00.000000Z', { message: 'after training', parents: ['aaaaaaaaaaaaaaaa'] }),
    summary('cccccccccccccccc', '2026-11-27T21:30:00.000000Z', { notebook: 'other.ipynb' }),
    { owner: 'no id, dropped' }
  ],
  shared: [{ ...summary('dddddddddddddddd', '2026-11-27T19:00:00.000000Z', { author: 'bob' }), share: 's1', expires_at: null }],
  refs: { best: 'bbbbbbbbbbbbbbbb' }
};

describe('snapshot panel model', () => {
  it('reads the list newest first, with refs and shares', () => {
    const list = parseSnapshotList(REPLY);
    assert.deepEqual(
      list.own.map(s => s.id.slice(0, 1)),
      ['c', 'b', 'a']
    );
    assert.deepEqual(list.own[1]!.refs, ['best']);
    assert.deepEqual(list.shared[0]!.share, { id: 's1', expiresAt: null });
  });

  it("keeps one notebook's history", () => {
    const list = parseSnapshotList(REPLY);
    assert.deepEqual(
      historyOf(list.own, 'work/a.ipynb').map(s => s.id.slice(0, 1)),
      ['b', 'a']
    );
    assert.deepEqual(historyOf(list.own, null), []);
    // Only whole path components match: "a.ipynb" is not "work/a.ipynb" of another folder's notebook.
    assert.deepEqual(historyOf(list.own, 'k/a.ipynb'), []);
  });

  it('says whose a snapshot is when it is not mine', () => {
    const list = parseSnapshotList(REPLY);
    assert.equal(describeSnapshot(list.own[1]!, 'alice'), '2026-11-27 21:00:00 · 2.0 KiB · [best] · after training');
    assert.match(describeSnapshot(list.shared[0]!, 'alice'), / · by bob$/);
  });

  it('selects at most two for a diff, and compares the older with the newer', () => {
    let selected = toggleSelection([], 'bbbbbbbbbbbbbbbb');
    selected = toggleSelection(selected, 'aaaaaaaaaaaaaaaa');
    selected = toggleSelection(selected, 'cccccccccccccccc');
    assert.deepEqual(selected, ['aaaaaaaaaaaaaaaa', 'cccccccccccccccc']);
    assert.deepEqual(toggleSelection(selected, 'aaaaaaaaaaaaaaaa'), ['cccccccccccccccc']);
    const list = parseSnapshotList(REPLY);
    const pair = diffPair(list.own, ['bbbbbbbbbbbbbbbb', 'aaaaaaaaaaaaaaaa']);
    assert.deepEqual(
      pair?.map(s => s.id.slice(0, 1)),
      ['a', 'b']
    );
    assert.equal(diffPair(list.own, ['aaaaaaaaaaaaaaaa']), null);
  });
});
