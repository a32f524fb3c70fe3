import socket
import sqlite3
import threading

import pytest
from kernelhop_snapshot import Capturer, Placeholder, UnavailableVariableError, user_namespace
from snapshot_helpers import round_trip


def _gen():
    yield 1


def test_unpicklable_values_are_reported_with_reasons(store, tmp_path):
    fh = open(tmp_path / "f.txt", "w")
    sock = socket.socket()
    conn = sqlite3.connect(":memory:")
    try:
        ns = {
            "gen": _gen(),
            "fh": fh,
            "sock": sock,
            "lock": threading.Lock(),
            "thread": threading.Thread(target=print),
            "conn": conn,
            "ok": [1, 2],
        }
        cap = Capturer(store).capture(ns)
    finally:
        fh.close()
        sock.close()
        conn.close()
    assert set(cap.unpicklable) == {"gen", "fh", "sock", "lock", "thread", "conn"}
    assert "generator" in cap.unpicklable["gen"]
    assert "TextIOWrapper" in cap.unpicklable["fh"]
    assert cap.manifest.unpicklable["fh"]["type"] == "_io.TextIOWrapper"
    assert cap.manifest.unpicklable["lock"]["type"] == "_thread.lock"
    assert all(entry["reason"] for entry in cap.manifest.unpicklable.values())
    assert cap.manifest.names() == ["ok"]

    out = Capturer(store).restore(cap.manifest)
    assert out["ok"] == [1, 2]
    gen = out["gen"]
    assert type(gen) is Placeholder
    assert "gen" in repr(gen) and "generator" in repr(gen)
    for use in (lambda: gen.send, lambda: next(gen), lambda: gen(), lambda: gen + 1, lambda: len(gen), str):
        with pytest.raises(UnavailableVariableError, match="'gen'.*could not be captured"):
            use() if use is not str else str(gen)


def test_bad_member_of_a_group_does_not_sink_the_others(store):
    shared = [1, 2, 3]
    ns = {"a": shared, "b": {"data": shared, "it": iter([1])}, "c": {"data": shared}}
    ns["b"]["gen"] = _gen()
    cap = Capturer(store).capture(ns)
    assert set(cap.unpicklable) == {"b"}
    assert [g.names for g in cap.manifest.groups] == [("a", "c")]
    out = Capturer(store).restore(cap.manifest)
    assert out["c"]["data"] is out["a"]


def test_placeholders_are_carried_not_captured(store):
    out = round_trip({"fh": Placeholder("fh", "_io.TextIOWrapper", "an open file"), "x": 1}, store)
    assert type(out["fh"]) is Placeholder
    with pytest.raises(UnavailableVariableError, match="an open file"):
        out["fh"].read()


def test_user_namespace_drops_placeholders():
    class Shell:
        user_ns = {"fh": Placeholder("fh", "t", "r"), "x": 1}
        user_ns_hidden = {}

    assert user_namespace(Shell()) == {"x": 1}


def test_a_memmap_opened_for_writing_stays_with_its_process(store, tmp_path):
    import numpy as np

    path = tmp_path / "data.bin"
    path.write_bytes(bytes(16))
    writes = np.memmap(path, dtype="u1", mode="r+")
    reads = np.memmap(path, dtype="u1", mode="r")
    private = np.memmap(path, dtype="u1", mode="c")
    ns = {"writes": writes, "window": writes[2:6], "plain": np.asarray(writes)[1:], "reads": reads, "private": private}
    cap = Capturer(store).capture(ns)
    # A copy of its bytes would come home and no longer write to the file (numpy's own pickle does that).
    assert set(cap.unpicklable) == {"writes", "window", "plain"}
    assert "opened for writing ('r+')" in cap.unpicklable["writes"]
    assert str(path) in cap.unpicklable["writes"]
    out = Capturer(store).restore(cap.manifest)
    # The others travel as their bytes, read-only as they were (numpy's own pickle made them writeable).
    assert out["reads"].tolist() == [0] * 16 and not out["reads"].flags.writeable
    assert out["private"].flags.writeable
