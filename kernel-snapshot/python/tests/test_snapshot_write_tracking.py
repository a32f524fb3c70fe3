"""Write tracking (write_tracking.py): a worker's capture skips the chunks of restored buffers nobody wrote, and
still makes exactly the manifest a fresh capture makes, whatever wrote the memory."""

import gc
import os
import threading

import numpy as np
import pandas as pd
import pytest
from kernelhop_snapshot import Capturer, CorruptBlobError, DirectoryBlobStore, MemoryBlobStore, MissingBlobError
from kernelhop_snapshot.write_tracking import WriteTracker

MiB = 1 << 20


@pytest.fixture
def hashed(monkeypatch):
    """Bytes hashed by chunking from here on."""
    import kernelhop_snapshot.chunking as chunking

    count = [0]
    real = chunking.digest_of

    def counting(data):
        count[0] += memoryview(data).nbytes
        return real(data)

    monkeypatch.setattr(chunking, "digest_of", counting)
    return count


def _worker(ns):
    """A state captured by one capturer and restored by a tracking one, as a kernel and a worker do."""
    store = MemoryBlobStore()
    first = Capturer(store).capture(ns)
    worker = Capturer(store, track_writes=True)
    assert worker.tracker is not None and worker.tracker.available, worker.tracker and worker.tracker.reason
    return worker, worker.restore(first.manifest), first


def _fresh(ns):
    return Capturer(MemoryBlobStore()).capture(ns).manifest.groups


def _state():
    rng = np.random.default_rng(7)
    return {
        "weights": rng.random(4 * MiB // 8),
        "frame": pd.DataFrame({"a": rng.random(300_000), "b": rng.integers(0, 9, 300_000)}),
        "n": 3,
    }


def _in_a_thread(write):
    def run(ns):
        t = threading.Thread(target=write, args=(ns,))
        t.start()
        t.join()

    return run


def test_this_linux_shows_copy_on_write_in_pagemap():
    tracker = WriteTracker()
    assert tracker.available, tracker.reason


def test_an_untouched_restored_state_is_captured_without_reading_its_buffers(hashed):
    worker, ns, first = _worker(_state())
    hashed[0] = 0
    again = worker.capture(ns)
    assert again.manifest.groups == first.manifest.groups
    assert hashed[0] < MiB  # the pickle streams, not the 6.4 MiB of buffers


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda ns: ns["weights"].__setitem__(300_000, -1.0), id="numpy store"),
        pytest.param(lambda ns: ns["frame"].iloc.__setitem__((5, 0), 42.0), id="pandas iloc"),
        pytest.param(_in_a_thread(lambda ns: ns["weights"][:10].fill(0)), id="another thread"),
    ],
)
def test_each_way_of_writing_is_seen_and_the_capture_equals_a_fresh_one(hashed, write):
    worker, ns, first = _worker(_state())
    write(ns)
    hashed[0] = 0
    again = worker.capture(ns)
    assert hashed[0] < 3 * MiB  # the chunks around the write, not everything
    assert again.manifest.groups == _fresh(ns)
    assert again.manifest.groups != first.manifest.groups


def test_a_write_by_the_kernel_into_the_buffer_is_seen(tmp_path, hashed):
    worker, ns, _ = _worker(_state())
    source = tmp_path / "bytes"
    source.write_bytes(b"\x7f" * 4096)
    with open(source, "rb", buffering=0) as f:
        view = memoryview(ns["weights"]).cast("B")
        assert os.readv(f.fileno(), [view[MiB : MiB + 4096]]) == 4096  # read(2): no CPU store in this process
    again = worker.capture(ns)
    assert again.manifest.groups == _fresh(ns)


def test_every_later_capture_still_sees_a_page_written_once():
    worker, ns, _ = _worker(_state())
    ns["weights"][0] = 5.0
    second = worker.capture(ns)
    ns["weights"][0] = np.random.default_rng(7).random(4 * MiB // 8)[0]  # back to the restored value
    third = worker.capture(ns)
    assert third.manifest.groups != second.manifest.groups
    assert third.manifest.groups == _fresh(ns)


def test_a_state_restored_from_a_directory_store_is_tracked(tmp_path, hashed):
    store = DirectoryBlobStore(tmp_path, durable=False)
    first = Capturer(store).capture(_state())
    worker = Capturer(store, track_writes=True)
    ns = worker.restore(first.manifest)
    assert np.array_equal(ns["weights"], _state()["weights"]) and ns["frame"].equals(_state()["frame"])
    hashed[0] = 0
    assert worker.capture(ns).manifest.groups == first.manifest.groups
    assert hashed[0] < MiB
    ns["weights"][12_345] = -1.0
    hashed[0] = 0
    again = worker.capture(ns)
    assert hashed[0] < 3 * MiB
    assert again.manifest.groups == _fresh(ns) != first.manifest.groups


def test_a_tracked_restore_still_refuses_a_corrupt_or_missing_chunk(tmp_path):
    """Chunks reach the tracked memory through a buffer where each is verified before it is written on."""
    store = DirectoryBlobStore(tmp_path, durable=False)
    first = Capturer(store).capture(_state())
    (weights,) = (g for g in first.manifest.groups if g.names == ("weights",))
    corrupt, missing = weights.buffers[0].chunks[3], weights.buffers[0].chunks[-1]
    original = open(store.path(corrupt), "rb").read()
    with open(store.path(corrupt), "wb") as f:
        f.write(bytes([original[0] ^ 1]) + original[1:])
    with pytest.raises(CorruptBlobError, match=corrupt.hash):
        Capturer(store, track_writes=True).restore(first.manifest)
    with open(store.path(corrupt), "wb") as f:
        f.write(original)
    os.unlink(store.path(missing))
    with pytest.raises(MissingBlobError, match=missing.hash):
        Capturer(store, track_writes=True).restore(first.manifest)
    assert not [t for t in threading.enumerate() if t.name.startswith("kernelhop-read")]  # nothing reads on


def test_views_and_replaced_arrays_are_hashed_as_usual(hashed):
    worker, ns, _ = _worker(_state())
    ns["half"] = ns["weights"][: len(ns["weights"]) // 2]  # a view: not the tracked region itself
    ns["weights"] = ns["weights"].copy()  # a new buffer
    again = worker.capture(ns)
    assert again.manifest.groups == _fresh(ns)


def test_a_region_is_forgotten_when_its_memory_is_freed():
    worker, ns, _ = _worker({"a": np.ones(2 * MiB)})
    assert len(worker.tracker._regions) == 1
    ns.clear()
    gc.collect()
    assert worker.tracker._regions == {}


def test_without_tracking_restores_use_plain_memory(monkeypatch):
    import kernelhop_snapshot.write_tracking as wt

    monkeypatch.setattr(wt, "_probe", lambda: (False, "write tracking is not available here: test"))
    store = MemoryBlobStore()
    state = _state()
    first = Capturer(store).capture(state)
    worker = Capturer(store, track_writes=True)
    assert not worker.tracker.available
    ns = worker.restore(first.manifest)
    ns["weights"][0] = 9.0
    assert worker.capture(ns).manifest.groups == _fresh(ns)
