"""Lazy restore on the worker: only the groups of the names a run reaches are read; the others go out as they came."""

from __future__ import annotations

import os

from kernelhop_snapshot import Capturer, Digest, DirectoryBlobStore, Manifest

SETUP = "import numpy as np\nbig = np.arange(500_000, dtype=np.float64)\nsmall = 3\na = b = [1, 2]"


def manifest(cache: str, snapshot: str) -> Manifest:
    return Manifest.from_bytes(DirectoryBlobStore(cache).get(Digest.parse(snapshot)))


def group_of(m: Manifest, name: str):
    return next(g for g in m.groups if name in g.names)


def remove_chunks(cache: str, m: Manifest, name: str) -> None:
    for d in group_of(m, name).blob_digests():
        os.remove(os.path.join(cache, d.hash[:2], d.hash))


def stderr(events) -> str:
    return "".join(e["text"] for e in events if e["event"] == "stream" and e["name"] == "stderr")


def test_groups_out_of_reach_are_not_read_and_go_out_as_they_came(worker, snapshot_of, cache):
    snapshot = snapshot_of(SETUP)
    before = manifest(cache, snapshot)
    remove_chunks(cache, before, "big")  # as on a runtime that fetched only what the run reaches
    events = worker.run("small = small * 2\nprint('big' in globals())", snapshot, reach=["small"])
    assert events[-1]["event"] == "done" and events[-1]["status"] == "ok", events
    assert events[0]["text"] == "False\n"
    after = manifest(cache, events[-1]["snapshot"])
    assert group_of(after, "big").key == group_of(before, "big").key
    assert group_of(after, "small").key != group_of(before, "small").key


def test_a_warm_worker_restores_a_lazy_group_once_a_run_reaches_it(worker, snapshot_of, cache):
    first = worker.run("small = 4", snapshot_of(SETUP), reach=["small"])
    assert first[-1]["status"] == "ok", first
    second = worker.run(
        "print(float(big.sum()), small)\nbig[0] = -1.0", first[-1]["snapshot"], "r2", reach=["big", "small"]
    )
    assert second[0]["text"] == f"{float(sum(range(500_000)))} 4\n", second
    store = DirectoryBlobStore(cache)
    ns = Capturer(store).restore(manifest(cache, second[-1]["snapshot"]))
    assert ns["big"][0] == -1.0 and ns["small"] == 4 and ns["a"] is ns["b"]


def test_a_group_changed_elsewhere_and_out_of_reach_drops_the_warm_workers_old_object(worker, snapshot_of, cache):
    first = worker.run("pass", snapshot_of(SETUP))  # restores everything
    assert first[-1]["status"] == "ok", first
    # The kernel changed `small`; this run does not reach it, so the worker must not keep its old 3 under the name.
    changed = snapshot_of(SETUP.replace("small = 3", "small = 30"))
    second = worker.run("print('small' in globals())", changed, "r2", reach=[])
    assert second[0]["text"] == "False\n", second
    assert group_of(manifest(cache, second[-1]["snapshot"]), "small").key == group_of(
        manifest(cache, changed), "small"
    ).key
    third = worker.run("print(small)", second[-1]["snapshot"], "r3", reach=["small"])
    assert third[0]["text"] == "30\n", third


def test_an_error_naming_a_lazy_variable_says_why_and_what_to_do(worker, snapshot_of):
    # What cell_reach cannot see: library code reading the cell's globals by name (here: the worker is told an
    # empty reach while the cell reads `small` through its frame).
    code = "import sys\nprint(sys._getframe().f_globals['small'])"
    events = worker.run(code, snapshot_of(SETUP), reach=[])
    assert events[-1]["status"] == "error", events
    assert "small was not restored on the runtime" in stderr(events)
    assert "--eager" in stderr(events)


def test_an_error_that_merely_mentions_a_lazy_variables_name_gives_no_hint(worker, snapshot_of):
    # As a bokeh error saying "figure" in a notebook with a variable `figure`: no lookup of it failed.
    events = worker.run("raise ValueError('the small print: a figure needs a renderer')", snapshot_of(SETUP), reach=[])
    assert events[-1]["status"] == "error", events
    assert "not restored" not in stderr(events) and "--eager" not in stderr(events), events


def test_a_name_error_for_a_lazy_variable_gives_the_hint(worker, snapshot_of):
    events = worker.run("exec('print(small)', {})", snapshot_of(SETUP), reach=[])
    assert "small was not restored on the runtime" in stderr(events), events


def test_rebinding_part_of_a_lazy_group_fails_the_capture_and_says_why(worker, snapshot_of, cache):
    events = worker.run("globals()['a'] = 'new'", snapshot_of(SETUP), reach=[])
    assert events[-1]["event"] == "failed" and events[-1]["code"] == "capture_failed", events
    message = events[-1]["message"]
    assert "rebound a" in message and "b was not restored" in message and "--eager" in message


def test_a_bad_reach_is_a_bad_command(worker, snapshot_of):
    events = worker.run("pass", snapshot_of(SETUP), reach="small")  # type: ignore[arg-type]
    assert events[-1]["event"] == "failed" and events[-1]["code"] == "bad_command", events


def test_without_reach_the_whole_snapshot_is_needed(worker, snapshot_of, cache):
    snapshot = snapshot_of(SETUP)
    remove_chunks(cache, manifest(cache, snapshot), "big")
    events = worker.run("pass", snapshot)
    assert events[-1]["event"] == "failed" and events[-1]["code"] == "restore_failed", events


def test_a_restored_group_out_of_reach_is_hidden_and_comes_back_as_the_same_object(worker, snapshot_of, cache):
    first = worker.run("big_id = id(big)", snapshot_of(SETUP))  # no reach: everything restored
    assert first[-1]["status"] == "ok", first
    # Out of reach, the kernel may send `big` unread (stale): the cell must not see this worker's copy.
    second = worker.run("print('big' in globals())", first[-1]["snapshot"], "r2", reach=[])
    assert second[0]["text"] == "False\n", second
    assert group_of(manifest(cache, second[-1]["snapshot"]), "big").key == group_of(
        manifest(cache, first[-1]["snapshot"]), "big"
    ).key
    third = worker.run("print(id(big) == big_id)", second[-1]["snapshot"], "r3", reach=["big", "big_id"])
    assert third[0]["text"] == "True\n", third
