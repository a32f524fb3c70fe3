"""Change detection without pickling (identity.py, object_arrays.py): nothing unchanged is pickled again, and no
change inside a mutable object reached through a reused group is ever missed."""

import kernelhop_snapshot.capturer as capturer_module
import numpy as np
import pandas as pd
import pytest
from kernelhop_snapshot import Capturer, MemoryBlobStore, diff
from kernelhop_snapshot.identity import LeafLists, identity_print


@pytest.fixture
def pickled(monkeypatch):
    """The names each capture pickles."""
    names: list[str] = []
    real = capturer_module.dumps

    def counting(obj, *a, **k):
        names.extend(obj)
        return real(obj, *a, **k)

    monkeypatch.setattr(capturer_module, "dumps", counting)
    return names


def _fresh(ns):
    return Capturer(MemoryBlobStore()).capture(ns).manifest


def _state():
    return {
        "tokens": [f"tok-{i}" for i in range(5000)],
        "records": [{"id": i, "name": f"n{i}", "tags": ["x", str(i % 7)], "score": i * 0.5} for i in range(300)],
        "nested": {"a": [1, (2, [3, {"b": None}])], "c": frozenset({1, 2})},
        "leaf": "text",
    }


# Each change is made in place, deep inside a value, or swaps an object for an equal but different one (whose
# pickle differs: 1 and 1.0 and True, 0.0 and -0.0).
CHANGES = {
    "list element": lambda ns: ns["tokens"].__setitem__(4321, "other"),
    "list element, equal value": lambda ns: ns["tokens"].__setitem__(7, "".join(["tok", "-7"])),
    "list grows": lambda ns: ns["tokens"].append("more"),
    "dict value": lambda ns: ns["records"][150].__setitem__("score", 75),
    "dict value 0.0 to -0.0": lambda ns: ns["records"][0].__setitem__("score", -0.0),
    "dict gains a key": lambda ns: ns["records"][3].__setitem__("new", 1),
    "dict key order": lambda ns: ns["records"][4].update({"id": ns["records"][4].pop("id")}),
    "list in a dict in a list": lambda ns: ns["records"][299]["tags"].append("y"),
    "deep in a tuple": lambda ns: ns["nested"]["a"][1][1][1].__setitem__("b", True),
    "list in a tuple": lambda ns: ns["nested"]["a"][1][1].append(4),
    "a set appears": lambda ns: ns["records"][9].__setitem__("s", {1}),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_is_seen_and_nothing_else_is_pickled(change, pickled):
    ns = _state()
    capturer = Capturer(MemoryBlobStore())
    first = capturer.capture(ns)
    pickled.clear()
    assert capturer.capture(ns).manifest.groups == first.manifest.groups
    assert pickled == []

    CHANGES[change](ns)
    after = capturer.capture(ns)
    # Exactly the changed value is pickled again, and the manifest is the one a fresh capture makes (an equal
    # string in place of another pickles to the same bytes: pickled again, yet unchanged).
    assert len(pickled) == 1
    assert diff(first.manifest, after.manifest).changed_names in ([], pickled)
    assert after.manifest.groups == _fresh(ns).groups


def test_shared_references_still_join_groups_when_nothing_is_pickled(pickled):
    shared = [1, 2, 3]
    ns = {"a": shared, "b": {"k": shared}, "c": [4]}
    capturer = Capturer(MemoryBlobStore())
    first = capturer.capture(ns)
    assert [g.names for g in first.manifest.groups] == [("a", "b"), ("c",)]
    pickled.clear()
    ns["d"] = [shared]  # a new name reaching the shared list joins the group, which is pickled again
    second = capturer.capture(ns)
    assert [g.names for g in second.manifest.groups] == [("a", "b", "d"), ("c",)]
    assert sorted(pickled) == ["a", "b", "d"]
    assert second.manifest.groups == _fresh(ns).groups


def test_a_restored_state_is_captured_without_pickling(pickled):
    store = MemoryBlobStore()
    home = Capturer(store).capture(_state())
    worker = Capturer(store)
    ns = worker.restore(home.manifest)
    pickled.clear()
    again = worker.capture(ns)
    assert pickled == []
    assert again.manifest.groups == home.manifest.groups
    ns["records"][10]["tags"][0] = "changed"
    changed = worker.capture(ns)
    assert pickled == ["records"]
    assert diff(home.manifest, changed.manifest).changed_names == ["records"]


def test_a_reused_group_is_put_into_a_new_store():
    ns = _state()
    capturer = Capturer(MemoryBlobStore())
    first = capturer.capture(ns)
    capturer.store = fresh = MemoryBlobStore()  # a hop's store lives for one hop
    second = capturer.capture(ns)
    assert second.manifest.groups == first.manifest.groups
    assert not fresh.missing(second.manifest.blob_digests())


def test_untracked_values_are_refused():
    lists = LeafLists()
    for value in ([object()], {"s": {1, 2}}, [np.zeros(3)], {(1, 2): 3}, [1, [2, [type("S", (str,), {})("x")]]]):
        assert identity_print(value, lists) is None
    cyclic: list = []
    cyclic.append(cyclic)
    assert identity_print(cyclic, lists) is None  # the walk is bounded: a cycle is pickled as before


def test_object_column_pickle_is_reused_until_a_cell_changes_it(monkeypatch):
    import kernelhop_snapshot.object_arrays as object_arrays

    dumped = []
    real = object_arrays.pickle.dumps

    def counting(obj, *a, **k):  # pickle.dumps itself: anything else that calls it meanwhile still works
        if isinstance(obj, np.ndarray):
            dumped.append(obj.size)
        return real(obj, *a, **k)

    monkeypatch.setattr(object_arrays.pickle, "dumps", counting)
    ns = {"df": pd.DataFrame({"text": [f"row {i}" for i in range(20_000)], "x": np.arange(20_000.0)})}
    capturer = Capturer(MemoryBlobStore())
    first = capturer.capture(ns)
    assert dumped == [20_000]
    assert capturer.capture(ns).manifest.groups == first.manifest.groups
    assert dumped == [20_000]  # the column's pickle was reused

    ns["df"].loc[123, "text"] = "changed"
    changed = capturer.capture(ns)
    assert diff(first.manifest, changed.manifest).changed_names == ["df"]
    assert changed.manifest.groups == _fresh(ns).groups

    store = MemoryBlobStore()
    sent = Capturer(store).capture(ns)
    worker = Capturer(store)
    back = worker.restore(sent.manifest)
    pd.testing.assert_frame_equal(back["df"], ns["df"])
    dumped.clear()
    assert worker.capture(back).manifest.groups == sent.manifest.groups
    assert dumped == []  # the restore registered the column's pickle


def test_object_columns_holding_mutable_objects_are_pickled_each_time():
    ns = {"col": np.array([{"k": i} for i in range(5000)], dtype=object)}
    capturer = Capturer(MemoryBlobStore())
    first = capturer.capture(ns)
    ns["col"][17]["k"] = "changed"  # inside a dict the array points to: its pointers are unchanged
    assert diff(first.manifest, capturer.capture(ns).manifest).changed_names == ["col"]
