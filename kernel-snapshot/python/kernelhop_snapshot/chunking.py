"""Content-defined chunking (FastCDC) of pickle streams and buffers into blobs, and joining them back.

Boundaries depend on content, so changing a few bytes of a large buffer changes only the chunks around them and a
later capture stores and sends only those.

Speed: FastCDC runs in the calling thread (it holds the GIL); hashing (BLAKE3 releases the GIL), store writes and
reads (file I/O, fsync) run in a small thread pool, so a many-core host hashes and fsyncs chunks in parallel. The
pool is created on first use and dropped in a forked child, so importing this module starts no thread and a
pre-imported worker template stays safe to fork.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from fastcdc import fastcdc
from xxhash import xxh3_128_digest

from .blobstore import BlobStore
from .digest import Digest, digest_of
from .errors import CorruptBlobError
from .manifest import BlobRef
from .write_tracking import WriteTracker

MIN_SIZE = 64 * 1024
AVG_SIZE = 256 * 1024
MAX_SIZE = 1024 * 1024
# Below this a buffer is hashed and written inline: a round trip through the pool costs more than it saves.
_PARALLEL_FROM = 4 * MAX_SIZE
# Below this a zero-filled bytearray costs less than setting up a mapping.
_MMAP_FROM = 1 << 20

# Fingerprints only ever compare this process's bytes with its own earlier bytes; a random seed keeps anyone who
# writes into a buffer from picking bytes that collide with what was there (digests in the store are BLAKE3).
_SEED = int.from_bytes(os.urandom(8), "little")
_T = TypeVar("_T")

_WORKERS = min(16, 2 * (os.cpu_count() or 2))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="kernelhop")
        return _pool


def _forget_pool_in_child() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def chunk_spans(view: memoryview) -> Iterable[tuple[int, int]]:
    """(offset, length) of each chunk of ``view`` (a 1-d byte view); data up to MIN_SIZE is one chunk."""
    n = view.nbytes
    if n == 0:
        return ()
    if n <= MIN_SIZE:
        return ((0, n),)
    return ((c.offset, c.length) for c in fastcdc(view, min_size=MIN_SIZE, avg_size=AVG_SIZE, max_size=MAX_SIZE))


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


@dataclass(frozen=True)
class Chunked:
    """A buffer's ref and, where known, an XXH3-128 fingerprint of each of its chunks: the next capture's hint."""

    ref: BlobRef
    prints: tuple[bytes, ...] | None = None


class ChunkWriter:
    """Cuts streams into chunks and puts the ones the store lacks; ``finish()`` waits until all are written.

    Chunks are hashed and written as slices of the caller's data, never copied here, so that data must stay
    unchanged until ``finish()`` returns. ``written`` lists (in order, without repeats) the digests this writer put.
    """

    def __init__(self, store: BlobStore, tracker: WriteTracker | None = None) -> None:
        self.store = store
        self._tracker = tracker
        self.written: dict[Digest, None] = {}
        self._pending: list[Future[None]] = []
        # Our own stores skip re-hashing what we hashed a moment ago; any other store verifies in put().
        self._put = getattr(store, "put_hashed", store.put)

    def add(self, data: bytes | bytearray | memoryview, hint: BlobRef | None = None) -> BlobRef:
        """Chunk ``data``, put the chunks the store lacks, and return its ref; ``add_buffer`` without fingerprints."""
        return self.add_buffer(data, None if hint is None else Chunked(hint)).ref

    def add_buffer(self, data: bytes | bytearray | memoryview, hint: Chunked | None = None) -> Chunked:
        """Chunk ``data``, put the chunks the store lacks, and return its ref with each chunk's fingerprint.

        ``hint`` is what this stream was at the last capture, if any. A chunk of ``hint``, cut at the same offsets,
        whose bytes still have the same fingerprint (XXH3-128, six times faster than BLAKE3) or, without
        fingerprints, the same digest, is unchanged. When all are, the bytes are those FastCDC cut into ``hint``,
        so the hint is the answer and FastCDC (twice as slow as BLAKE3) is skipped. Otherwise FastCDC runs only from
        the first changed chunk until its cuts meet the old ones again (``_recut``), and only chunks with new bytes
        are hashed with BLAKE3. Content decides, never identity: a wrong hint costs one pass and changes no result.

        A buffer the tracker restored is its own hint, and its chunks whose pages nobody wrote since keep their
        digests unread (write_tracking.py).
        """
        view = _byte_view(data)
        parallel = view.nbytes >= _PARALLEL_FROM
        tracked = self._tracker.unchanged(view) if self._tracker is not None else None
        if tracked is None and (hint is None or hint.ref.size != view.nbytes or len(hint.ref.chunks) < 2):
            hint = None
        if tracked is not None or hint is not None:
            old = tracked[0] if tracked is not None else hint.ref  # type: ignore[union-attr]
            spans = _spans_of(old)
            pieces = [view[o : o + n] for o, n in spans]
            prints: list[bytes | None] = [None] * len(spans)
            if tracked is not None:
                clean = tracked[1]
            elif hint is not None and hint.prints is not None:
                prints = list(self._each(_prints, pieces, parallel))
                clean = [a == b for a, b in zip(prints, hint.prints, strict=True)]
            else:
                clean = [False] * len(spans)
            dirty = [i for i, known in enumerate(clean) if not known]
            digests = list(old.chunks)
            hashed = self._each(_digests_and_prints, [pieces[i] for i in dirty], parallel)
            for i, (d, fp) in zip(dirty, hashed, strict=True):
                digests[i], prints[i] = d, fp
            if digests == list(old.chunks):
                # A tracked buffer was restored from this store, so it holds these chunks: nothing removes chunks
                # from a runtime's cache. Any other hint may come from bytes the store never had.
                if tracked is None:
                    self._put_missing(digests, pieces, parallel)
                return Chunked(old, _complete(prints))
            spans = _recut(view, spans, [d == h for d, h in zip(digests, old.chunks, strict=True)])
            known = dict(zip(_spans_of(old), zip(digests, prints, strict=True), strict=True))
        else:
            spans, known = list(chunk_spans(view)), {}
        pieces = [view[o : o + n] for o, n in spans]
        fresh = [i for i, span in enumerate(spans) if span not in known]
        hashed = iter(self._each(_digests_and_prints, [pieces[i] for i in fresh], parallel))
        results = [known[span] if span in known else next(hashed) for span in spans]
        digests = [d for d, _ in results]
        self._put_missing(digests, pieces, parallel)
        return Chunked(BlobRef(view.nbytes, tuple(digests)), _complete([fp for _, fp in results]))

    def put_known(self, ref: BlobRef, data: bytes | bytearray | memoryview) -> None:
        """Put the chunks of ``data`` the store lacks, where ``data`` holds exactly the bytes ``ref`` names (bytes
        this process cut and hashed, or read and verified, earlier, and kept unchanged since): not hashed again."""
        view = _byte_view(data)
        self._put_missing(list(ref.chunks), [view[o : o + n] for o, n in _spans_of(ref)], False)

    @staticmethod
    def _each(work: Callable[[list[memoryview]], list[_T]], pieces: list[memoryview], parallel: bool) -> list[_T]:
        if not parallel:
            return work(pieces)
        # One task per run of pieces, not per piece: a pool round trip per 256 KiB chunk cost as much as hashing it.
        return [r for run in _executor().map(work, _runs(pieces)) for r in run]

    def _put_missing(self, digests: list[Digest], pieces: list[memoryview], parallel: bool) -> None:
        todo = []
        for d, piece in zip(digests, pieces, strict=True):
            if d in self.written or self.store.has(d):
                continue
            self.written[d] = None
            todo.append((d, piece))
        if parallel:
            self._pending.extend(_executor().submit(self._put_all, run) for run in _runs(todo))
        else:
            self._put_all(todo)

    def _put_all(self, items: list[tuple[Digest, memoryview]]) -> None:
        for d, piece in items:
            self._put(d, piece)

    def finish(self) -> list[Digest]:
        """Wait for every write; re-raise the first failure. Returns the digests written."""
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        for e in errors:
            if e is not None:
                raise e
        return list(self.written)


def _spans_of(ref: BlobRef) -> list[tuple[int, int]]:
    spans, offset = [], 0
    for d in ref.chunks:
        spans.append((offset, d.size))
        offset += d.size
    return spans


def _recut(view: memoryview, old: list[tuple[int, int]], same: list[bool]) -> list[tuple[int, int]]:
    """The FastCDC cut of ``view``, given its cut ``old`` at the last capture and which of those chunks still hold
    the same bytes (``same``), without running FastCDC over the unchanged parts.

    FastCDC decides each cut from the bytes after the previous cut alone (its rolling hash restarts at every chunk).
    So the cuts before the first changed chunk are the old ones; from its start FastCDC runs afresh until a new cut
    lands on an old cut after which every old chunk is unchanged: from there on the old cuts repeat.
    """
    first = same.index(False)
    tail_same = [False] * (len(old) + 1)
    tail_same[len(old)] = True
    for j in range(len(old) - 1, -1, -1):
        tail_same[j] = same[j] and tail_same[j + 1]
    next_after_end = {o + n: j + 1 for j, (o, n) in enumerate(old)}
    start = old[first][0]
    spans = old[:first]
    for o, n in chunk_spans(view[start:]):
        spans.append((start + o, n))
        resume = next_after_end.get(start + o + n)
        if resume is not None and resume > first and tail_same[resume]:
            return spans + old[resume:]
    return spans


def _digests_and_prints(pieces: list[memoryview]) -> list[tuple[Digest, bytes]]:
    # Both while the piece is in cache: the fingerprint costs a sixth of the digest.
    return [(digest_of(p), xxh3_128_digest(p, _SEED)) for p in pieces]


def _prints(pieces: list[memoryview]) -> list[bytes]:
    return [xxh3_128_digest(p, _SEED) for p in pieces]


def _complete(prints: list[bytes | None]) -> tuple[bytes, ...] | None:
    return None if any(p is None for p in prints) else tuple(prints)  # type: ignore[arg-type]


def _runs(items: list, per_worker: int = 2) -> list[list]:
    """``items`` cut into contiguous runs, a couple per pool thread (so a slow run does not hold up the rest)."""
    if not items:
        return []
    n = min(len(items), per_worker * _WORKERS)
    size = -(-len(items) // n)
    return [items[i : i + size] for i in range(0, len(items), size)]


def read_chunked(ref: BlobRef, store: BlobStore, tracker: WriteTracker | None = None) -> memoryview:
    """The bytes ``ref`` names, joined into one new writable buffer, each chunk read straight into its place.

    A large buffer is an anonymous mmap rather than a ``bytearray``: its pages arrive zeroed on first touch, which saves
    a full pass over memory on a large restore. It is not a numpy array either, because arrays rebuilt on a numpy
    buffer would have it as their base and be captured again as views of it. With a ``tracker`` a large buffer is
    tracked memory instead, so a later capture skips its chunks nobody wrote.
    """
    if ref.size >= _MMAP_FROM:
        if tracker is not None:
            tracked = tracker.restored_buffer(ref, lambda fd: _write_chunks(fd, ref, store))
            if tracked is not None:
                return tracked
        out = memoryview(mmap.mmap(-1, ref.size))
    else:
        out = memoryview(bytearray(ref.size))
    _each_chunk(ref, lambda d, offset: _read_chunk(d, store, out[offset : offset + d.size]))
    return out


def _read_chunk(d: Digest, store: BlobStore, target: memoryview) -> None:
    read_into = getattr(store, "read_into", None)
    if read_into is not None:
        read_into(d, target)
        return
    data = store.get(d)
    # A store of unknown provenance: verify what it hands back (ours verify in read_into).
    if len(data) != d.size or digest_of(data) != d:
        raise CorruptBlobError(d, "the store returned bytes with another digest")
    target[:] = data


_scratch = threading.local()


def _write_chunks(fd: int, ref: BlobRef, store: BlobStore) -> None:
    """Write ``ref``'s bytes into the file ``fd`` at their offsets, each chunk read and verified first in a buffer of
    the calling thread's own, then written from there: the file gets exactly the bytes verified.

    Why not read(2) into a shared mapping of the file, as before: each of its pages was then allocated by a page
    fault inside the copy, where pwrite(2) allocates them in the kernel's write path, 1.35x faster on the 2-core VM
    (benchmarks/RESULTS.md, "The worker's cold restore"). The buffer costs up to MAX_SIZE per thread, kept.
    """

    def write(d: Digest, offset: int) -> None:
        held = getattr(_scratch, "buffer", None)
        if held is None or len(held) < d.size:
            held = _scratch.buffer = bytearray(max(d.size, MAX_SIZE))
        piece = memoryview(held)[: d.size]
        _read_chunk(d, store, piece)
        while piece:
            n = os.pwrite(fd, piece, offset)
            piece, offset = piece[n:], offset + n

    _each_chunk(ref, write)


def _each_chunk(ref: BlobRef, read: Callable[[Digest, int], None]) -> None:
    """``read(digest, offset)`` for each chunk of ``ref``; in the pool for a large one."""

    def read_all(items: list[tuple[Digest, int]]) -> None:
        for d, o in items:
            read(d, o)

    items = list(zip(ref.chunks, (o for o, _ in _spans_of(ref)), strict=True))
    if ref.size >= _PARALLEL_FROM:
        for f in [_executor().submit(read_all, run) for run in _runs(items)]:
            f.result()
    else:
        read_all(items)
