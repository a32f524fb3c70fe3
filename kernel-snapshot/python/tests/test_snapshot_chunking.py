import numpy as np
from kernelhop_snapshot import Capturer, MemoryBlobStore
from kernelhop_snapshot.chunking import MAX_SIZE, MIN_SIZE, ChunkWriter, read_chunked


def test_small_data_is_one_chunk():
    writer = ChunkWriter(MemoryBlobStore())
    ref = writer.add(b"x" * MIN_SIZE)
    assert len(ref.chunks) == 1
    assert writer.add(b"").chunks == ()
    assert writer.finish() == list(ref.chunks)


def test_chunk_sizes_and_join():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 8 * 1024 * 1024, dtype=np.uint8)
    store = MemoryBlobStore()
    writer = ChunkWriter(store)
    ref = writer.add(memoryview(data))
    written = writer.finish()
    assert ref.size == data.nbytes
    sizes = [c.size for c in ref.chunks]
    assert all(MIN_SIZE <= s <= MAX_SIZE for s in sizes[:-1])
    assert 10 < len(sizes) < 100  # average near 256 KiB
    assert written == list(dict.fromkeys(ref.chunks))
    joined = read_chunked(ref, store)
    assert not joined.readonly and joined == data.tobytes()


def test_fastcdc_locality_in_64mib_array():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, 64 * 1024 * 1024, dtype=np.uint8)
    store = MemoryBlobStore()
    capturer = Capturer(store)
    first = capturer.capture({"x": x})
    x[20_000_000 : 20_000_000 + 1024 * 1024] = rng.integers(0, 256, 1024 * 1024, dtype=np.uint8)
    second = capturer.capture({"x": x})
    before = set(first.manifest.groups[0].buffers[0].chunks)
    after = second.manifest.groups[0].buffers[0].chunks
    new = [c for c in after if c not in before]
    assert len(after) > 100
    # 1 MiB changed: the chunks covering it plus one boundary re-sync on each side.
    assert sum(c.size for c in new) <= 4 * 1024 * 1024
    assert len(second.new_blobs) <= len(new) + 2  # + pickle stream (unchanged here) + manifest
    assert sum(c.size for c in after) == x.nbytes


def test_hinted_add_equals_a_fresh_cut_wherever_the_bytes_changed():
    import numpy as np
    from kernelhop_snapshot import MemoryBlobStore
    from kernelhop_snapshot.chunking import ChunkWriter

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, 24 * 1024 * 1024, dtype=np.uint8)
    hint = ChunkWriter(MemoryBlobStore()).add(base)
    n = base.size
    edits = [
        [(0, 10)],  # the first chunk
        [(n - 10, n)],  # the last chunk
        [(n // 2, n // 2 + 1)],  # one byte in the middle
        [(1000, 3_000_000), (n // 3, n // 3 + 5), (n - 70_000, n - 69_000)],  # several places, one long run
        [(0, n)],  # everything
    ]
    for edit in edits:
        data = base.copy()
        for lo, hi in edit:
            data[lo:hi] ^= 0x5A
        fresh = ChunkWriter(MemoryBlobStore()).add(data)
        store = MemoryBlobStore()
        writer = ChunkWriter(store)
        hinted = writer.add(data, hint)
        writer.finish()
        assert hinted == fresh, edit
        assert store.missing(hinted.chunks) == []
    assert ChunkWriter(MemoryBlobStore()).add(base, hint) == hint
