import numpy as np
from kernelhop_snapshot import Capturer, MemoryBlobStore, diff


def test_diff_changed_new_deleted_and_unpicklable():
    store = MemoryBlobStore()
    capturer = Capturer(store)
    x = np.arange(10)
    shared = []
    ns = {"x": x, "a": shared, "b": shared, "gone": "bye", "same": (1, 2), "fh": (i for i in [])}
    old = capturer.capture(ns).manifest

    first = diff(None, old)
    assert first.changed_names == ["a", "b", "gone", "same", "x"] and first.deleted_names == []

    x[0] = 100
    del ns["gone"]
    ns["new"] = {"k": 1}
    del ns["fh"]  # an unpicklable name that is no longer there is never deleted by a hop
    new = capturer.capture(ns).manifest
    d = diff(old, new)
    assert d.changed_names == ["new", "x"]
    assert [g.names for g in d.changed_groups] == [("new",), ("x",)]
    assert d.deleted_names == ["gone"]

    assert diff(new, new).changed_groups == []


def test_name_becoming_unpicklable_is_neither_changed_nor_deleted():
    store = MemoryBlobStore()
    capturer = Capturer(store)
    old = capturer.capture({"v": 1, "w": 2}).manifest
    new = capturer.capture({"v": (i for i in [1]), "w": 2}).manifest
    d = diff(old, new)
    assert d.changed_names == [] and d.deleted_names == []


def test_regrouping_changes_the_group():
    store = MemoryBlobStore()
    capturer = Capturer(store)
    a, b = [], []
    old = capturer.capture({"a": a, "b": b}).manifest
    new = capturer.capture({"a": a, "b": a}).manifest
    assert diff(old, new).changed_names == ["a", "b"]
