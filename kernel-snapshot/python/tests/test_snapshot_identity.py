from kernelhop_snapshot import Capturer
from snapshot_helpers import round_trip


def test_shared_list(store):
    a = b = []
    out = round_trip({"a": a, "b": b, "c": []}, store)
    assert out["a"] is out["b"]
    assert out["a"] is not out["c"]


def test_containers_reaching_a_shared_object(store):
    shared = {"k": [1, 2]}
    ns = {"x": [shared], "y": (shared, 3), "z": {"inner": shared["k"]}, "alone": {"k": 1}}
    cap = Capturer(store).capture(ns)
    assert [g.names for g in cap.manifest.groups] == [("alone",), ("x", "y", "z")]
    out = Capturer(store).restore(cap.manifest)
    assert out["x"][0] is out["y"][0]
    assert out["z"]["inner"] is out["x"][0]["k"]


def test_cycles(store):
    a = []
    a.append(a)
    d = {"self": None}
    d["self"] = d
    out = round_trip({"a": a, "d": d}, store)
    assert out["a"][0] is out["a"]
    assert out["d"]["self"] is out["d"]


def test_immutables_do_not_join_groups(store):
    s = "shared string" * 10
    t = (1, 2, "x")
    cap = Capturer(store).capture({"s1": s, "s2": s, "t1": t, "t2": t, "n1": 10**30, "n2": 10**30})
    assert all(len(g.names) == 1 for g in cap.manifest.groups)
