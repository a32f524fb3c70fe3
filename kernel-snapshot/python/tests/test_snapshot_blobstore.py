import os

import numpy as np
import pytest
from kernelhop_snapshot import (
    BlobStore,
    Capturer,
    CorruptBlobError,
    DirectoryBlobStore,
    MemoryBlobStore,
    MissingBlobError,
    digest_of,
)


def test_put_get_has_missing(store):
    assert isinstance(store, BlobStore)
    data = b"hello kernelhop"
    d = digest_of(data)
    assert not store.has(d)
    assert store.missing([d, d]) == [d]
    store.put(d, data)
    assert store.has(d)
    assert bytes(store.get(d)) == data
    assert store.missing([d]) == []
    store.put(d, data)  # idempotent


def test_put_refuses_wrong_digest(store):
    d = digest_of(b"one")
    with pytest.raises(CorruptBlobError, match=str(d)):
        store.put(d, b"two")
    assert not store.has(d)


def test_get_missing_names_digest(store):
    d = digest_of(b"absent")
    with pytest.raises(MissingBlobError, match=str(d)):
        store.get(d)


def test_memory_store_copies_on_put():
    store = MemoryBlobStore()
    buf = bytearray(b"mutable")
    d = digest_of(buf)
    store.put(d, memoryview(buf))
    buf[0] = ord("M")
    assert store.get(d) == b"mutable"


def test_directory_layout_and_no_temp_files(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    data = os.urandom(1000)
    d = digest_of(data)
    store.put(d, data)
    path = tmp_path / d.hash[:2] / d.hash
    assert path.read_bytes() == data
    assert os.listdir(tmp_path / d.hash[:2]) == [d.hash]


def _capture_big(store):
    x = np.arange(200_000, dtype=np.float64)
    cap = Capturer(store).capture({"x": x})
    return cap, x


def test_corrupt_chunk_is_detected_on_restore(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    cap, _ = _capture_big(store)
    victim = cap.manifest.groups[0].buffers[0].chunks[0]
    path = store.path(victim)
    raw = bytearray(open(path, "rb").read())
    raw[100] ^= 0xFF
    with open(path, "wb") as f:
        f.write(raw)
    with pytest.raises(CorruptBlobError, match=victim.hash):
        Capturer(store).restore(cap.manifest)
    with pytest.raises(CorruptBlobError, match=victim.hash):
        store.get(victim)


def test_truncated_chunk_is_detected(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    cap, _ = _capture_big(store)
    victim = cap.manifest.groups[0].buffers[0].chunks[-1]
    with open(store.path(victim), "r+b") as f:
        f.truncate(victim.size - 1)
    with pytest.raises(CorruptBlobError, match="bytes"):
        Capturer(store).restore(cap.manifest)


def test_missing_chunk_is_named(store):
    cap, _ = _capture_big(store)
    victim = cap.manifest.groups[0].buffers[0].chunks[0]
    if isinstance(store, DirectoryBlobStore):
        os.unlink(store.path(victim))
    else:
        del store._blobs[victim]
    with pytest.raises(MissingBlobError, match=victim.hash):
        Capturer(store).restore(cap.manifest)
