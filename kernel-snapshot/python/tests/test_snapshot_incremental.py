import numpy as np
from kernelhop_snapshot import Capturer, MemoryBlobStore, diff, restore


def test_unchanged_state_writes_nothing_new():
    store = MemoryBlobStore()
    capturer = Capturer(store)
    ns = {"x": np.random.default_rng(0).random(500_000), "s": "text" * 1000, "l": [1, 2]}
    first = capturer.capture(ns)
    second = capturer.capture(ns)
    assert second.new_blobs in ([], [second.digest])
    assert diff(first.manifest, second.manifest).changed_groups == []


def test_immutable_values_are_reused_by_identity(monkeypatch):
    store = MemoryBlobStore()
    capturer = Capturer(store)
    big = b"z" * 3_000_000
    ns = {"big": big, "t": (1, "a", (2.5, None)), "l": [1]}
    first = capturer.capture(ns)

    import kernelhop_snapshot.capturer as cap_mod

    pickled = []
    real = cap_mod.dumps

    def counting(obj, *a, **k):
        pickled.extend(obj)
        return real(obj, *a, **k)

    monkeypatch.setattr(cap_mod, "dumps", counting)
    second = capturer.capture(ns)
    assert pickled == []  # each value is the same objects as before (identity.py): nothing is pickled again
    assert second.manifest.groups == first.manifest.groups

    ns["big"] = b"y" + big[1:]  # a new object under the same name is pickled again
    ns["l"].append(2)  # and so is a list changed in place
    pickled.clear()
    third = capturer.capture(ns)
    assert sorted(pickled) == ["big", "l"]
    assert diff(second.manifest, third.manifest).changed_names == ["big", "l"]


def test_restored_immutables_are_remembered():
    store = MemoryBlobStore()
    cap = Capturer(store).capture({"s": "hello" * 10, "l": [1]})
    worker = Capturer(store)
    ns = worker.restore(cap.manifest)
    again = worker.capture(ns)
    assert again.manifest.groups == cap.manifest.groups


def _fresh_refs(ns):
    return Capturer(MemoryBlobStore()).capture(ns).manifest.groups


def test_buffer_hints_skip_chunking_yet_match_a_fresh_capture(monkeypatch):
    import kernelhop_snapshot.chunking as chunking

    rng = np.random.default_rng(1)
    ns = {"a": rng.random(2_000_000), "b": rng.random(1_000_000)}
    capturer = Capturer(MemoryBlobStore())
    capturer.capture(ns)

    cut = []
    real = chunking.chunk_spans
    monkeypatch.setattr(chunking, "chunk_spans", lambda view: cut.append(view.nbytes) or real(view))
    unchanged = capturer.capture(ns)
    assert ns["a"].nbytes not in cut and ns["b"].nbytes not in cut  # both hints held: FastCDC skipped

    saved = ns["a"][1_000_000:1_000_100].copy()
    ns["a"][1_000_000:1_000_100] += 1.0  # in place: same object, same shape, other bytes
    changed = capturer.capture(ns)
    # Only a is cut again, and only from its changed chunk on (FastCDC over a tail of it, not all of it).
    assert ns["b"].nbytes not in cut and ns["a"].nbytes not in cut
    assert any(1_000_000 < c < ns["a"].nbytes for c in cut)
    assert changed.manifest.groups == _fresh_refs(ns)
    ns["a"][1_000_000:1_000_100] = saved
    assert unchanged.manifest.groups == _fresh_refs(ns)
    assert diff(unchanged.manifest, changed.manifest).changed_names == ["a"]


def test_restored_buffers_hint_the_next_capture(monkeypatch):
    import kernelhop_snapshot.chunking as chunking

    store = MemoryBlobStore()
    ns = {"a": np.random.default_rng(2).random(1_500_000)}
    first = Capturer(store).capture(ns)
    worker = Capturer(store)
    restored = worker.restore(first.manifest)

    cut = []
    real = chunking.chunk_spans
    monkeypatch.setattr(chunking, "chunk_spans", lambda view: cut.append(view.nbytes) or real(view))
    again = worker.capture(restored)
    assert ns["a"].nbytes not in cut
    assert again.manifest.groups == first.manifest.groups


def test_fingerprints_spare_blake3_over_unchanged_chunks_and_a_restore_falls_back_to_digests(monkeypatch):
    import kernelhop_snapshot.chunking as chunking

    hashed = [0]
    real = chunking.digest_of
    monkeypatch.setattr(chunking, "digest_of", lambda data: hashed.__setitem__(0, hashed[0] + len(data)) or real(data))
    store = MemoryBlobStore()
    ns = {"a": np.random.default_rng(3).random(4_000_000)}  # 32 MB
    capturer = Capturer(store)
    first = capturer.capture(ns)

    hashed[0] = 0
    assert capturer.capture(ns).manifest.groups == first.manifest.groups
    assert hashed[0] < 100_000  # the pickle stream: every chunk of a kept its fingerprint

    ns["a"][2_000_000] = -1.0
    hashed[0] = 0
    changed = capturer.capture(ns)
    assert 0 < hashed[0] < 3_000_000  # the chunks around the change (FastCDC re-cuts a little), not 32 MB
    assert changed.manifest.groups == _fresh_refs(ns)

    worker = Capturer(store)  # a restore knows digests, not fingerprints: its first capture hashes with BLAKE3
    restored = worker.restore(changed.manifest)
    hashed[0] = 0
    assert worker.capture(restored).manifest.groups == changed.manifest.groups
    assert hashed[0] >= ns["a"].nbytes
    hashed[0] = 0
    worker.capture(restored)
    assert hashed[0] < 100_000


def test_a_group_out_of_reach_keeps_its_last_buffers_unread(store):
    capturer = Capturer(store)
    arr = np.arange(1_000_000, dtype=np.float64)
    ns = {"arr": arr, "x": 1}
    first = capturer.capture(ns)
    arr[0] = -1.0  # in place: the pickle (shape, dtype) is the same
    out_of_reach = capturer.capture(ns, reach={"x"})
    assert out_of_reach.unverified == {"arr"}
    assert _group(out_of_reach, "arr").key == _group(first, "arr").key  # stale, and said to be
    reached = capturer.capture(ns, reach={"arr"})
    assert reached.unverified == frozenset()
    assert _group(reached, "arr").key != _group(first, "arr").key
    assert restore(reached.manifest, store)["arr"][0] == -1.0
    # A new pickle (another shape) is read, reached or not; so is everything without a reach.
    ns["arr"] = np.arange(10, dtype=np.float64)
    assert capturer.capture(ns, reach={"x"}).unverified == frozenset()
    assert capturer.capture(ns).unverified == frozenset()


def _group(cap, name):
    return next(g for g in cap.manifest.groups if name in g.names)
