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
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from fastcdc import fastcdc

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
        """Chunk ``data``, put the chunks the store lacks, and return its ref.

        ``hint`` is the ref this stream had at the last capture, if any. When every chunk of ``hint``, cut at the
        same offsets, still hashes to the same digest, the bytes are those FastCDC cut into ``hint``, so the hint is
        the answer and FastCDC (twice as slow as hashing) is skipped. Otherwise FastCDC runs only from the first
        changed chunk until its cuts meet the old ones again (``_recut``). Digests decide, never identity: a wrong
        hint costs one pass of hashing and changes no result.

        A buffer the tracker restored is its own hint, and its chunks whose pages nobody wrote since keep their
        digests unread (write_tracking.py).
        """
        view = _byte_view(data)
        parallel = view.nbytes >= _PARALLEL_FROM
        tracked = self._tracker.unchanged(view) if self._tracker is not None else None
        if tracked is not None:
            hint, clean = tracked
        elif hint is not None and hint.size == view.nbytes and len(hint.chunks) > 1:
            clean = [False] * len(hint.chunks)
        else:
            hint = None
        if hint is not None:
            spans = _spans_of(hint)
            pieces = [view[o : o + n] for o, n in spans]
            read = iter(self._hash([p for p, known in zip(pieces, clean, strict=True) if not known], parallel))
            digests = [d if known else next(read) for d, known in zip(hint.chunks, clean, strict=True)]
            if digests == list(hint.chunks):
                self._put_missing(digests, pieces, parallel)
                return hint
            spans = _recut(view, spans, [d == h for d, h in zip(digests, hint.chunks, strict=True)])
            known = dict(zip(_spans_of(hint), digests, strict=True))
        else:
            spans, known = list(chunk_spans(view)), {}
        pieces = [view[o : o + n] for o, n in spans]
        fresh = [i for i, span in enumerate(spans) if span not in known]
        fresh_digests = iter(self._hash([pieces[i] for i in fresh], parallel))
        digests = [known[span] if span in known else next(fresh_digests) for span in spans]
        self._put_missing(digests, pieces, parallel)
        return BlobRef(view.nbytes, tuple(digests))

    @staticmethod
    def _hash(pieces: list[memoryview], parallel: bool) -> list[Digest]:
        if not parallel:
            return [digest_of(p) for p in pieces]
        # One task per run of pieces, not per piece: a pool round trip per 256 KiB chunk cost as much as hashing it.
        return [d for run in _executor().map(_digests, _runs(pieces)) for d in run]

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


def _digests(pieces: list[memoryview]) -> list[Digest]:
    return [digest_of(p) for p in pieces]


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
        tracked = tracker.restored_buffer(ref, lambda out: _fill(out, ref, store)) if tracker is not None else None
        if tracked is not None:
            return tracked
        out = memoryview(mmap.mmap(-1, ref.size))
    else:
        out = memoryview(bytearray(ref.size))
    _fill(out, ref, store)
    return out


def _fill(out: memoryview, ref: BlobRef, store: BlobStore) -> None:
    read_into = getattr(store, "read_into", None)

    def read(d: Digest, offset: int) -> None:
        target = out[offset : offset + d.size]
        if read_into is not None:
            read_into(d, target)
            return
        data = store.get(d)
        # A store of unknown provenance: verify what it hands back (ours verify in read_into).
        if len(data) != d.size or digest_of(data) != d:
            raise CorruptBlobError(d, "the store returned bytes with another digest")
        target[:] = data

    offsets = []
    offset = 0
    for d in ref.chunks:
        offsets.append(offset)
        offset += d.size

    def read_all(items: list[tuple[Digest, int]]) -> None:
        for d, o in items:
            read(d, o)

    items = list(zip(ref.chunks, offsets, strict=True))
    if ref.size >= _PARALLEL_FROM:
        for f in [_executor().submit(read_all, run) for run in _runs(items)]:
            f.result()
    else:
        read_all(items)
