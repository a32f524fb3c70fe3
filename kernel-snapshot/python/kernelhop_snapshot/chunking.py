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

MIN_SIZE = 64 * 1024
AVG_SIZE = 256 * 1024
MAX_SIZE = 1024 * 1024
# Below this a buffer is hashed and written inline: a round trip through the pool costs more than it saves.
_PARALLEL_FROM = 4 * MAX_SIZE
# Below this a zero-filled bytearray costs less than setting up a mapping.
_MMAP_FROM = 1 << 20

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 2)), thread_name_prefix="kernelhop")
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

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.written: dict[Digest, None] = {}
        self._pending: list[Future[None]] = []
        # Our own stores skip re-hashing what we hashed a moment ago; any other store verifies in put().
        self._put = getattr(store, "put_hashed", store.put)

    def add(self, data: bytes | bytearray | memoryview, hint: BlobRef | None = None) -> BlobRef:
        """Chunk ``data``, put the chunks the store lacks, and return its ref.

        ``hint`` is the ref this stream had at the last capture, if any. When every chunk of ``hint``, cut at the
        same offsets, still hashes to the same digest, the bytes are those FastCDC cut into ``hint``, so the hint is
        the answer and FastCDC (twice as slow as hashing) is skipped. Digests decide, never identity: a wrong hint
        costs one pass of hashing and changes no result.
        """
        view = _byte_view(data)
        parallel = view.nbytes >= _PARALLEL_FROM
        known: dict[tuple[int, int], Digest] = {}
        if hint is not None and hint.size == view.nbytes and len(hint.chunks) > 1:
            spans = []
            offset = 0
            for d in hint.chunks:
                spans.append((offset, d.size))
                offset += d.size
            digests = self._hash([view[o : o + n] for o, n in spans], parallel)
            if digests == list(hint.chunks):
                self._put_missing(digests, [view[o : o + n] for o, n in spans], parallel)
                return hint
            known = dict(zip(spans, digests, strict=True))
        spans = list(chunk_spans(view))
        pieces = [view[o : o + n] for o, n in spans]
        if known:
            # A changed buffer: chunks FastCDC cut where the hint did (all but those around the change) are hashed.
            fresh = [i for i, span in enumerate(spans) if span not in known]
            fresh_digests = iter(self._hash([pieces[i] for i in fresh], parallel))
            digests = [known[span] if span in known else next(fresh_digests) for span in spans]
        else:
            digests = self._hash(pieces, parallel)
        self._put_missing(digests, pieces, parallel)
        return BlobRef(view.nbytes, tuple(digests))

    @staticmethod
    def _hash(pieces: list[memoryview], parallel: bool) -> list[Digest]:
        return list(_executor().map(digest_of, pieces)) if parallel else [digest_of(p) for p in pieces]

    def _put_missing(self, digests: list[Digest], pieces: list[memoryview], parallel: bool) -> None:
        for d, piece in zip(digests, pieces, strict=True):
            if d in self.written or self.store.has(d):
                continue
            self.written[d] = None
            if parallel:
                self._pending.append(_executor().submit(self._put, d, piece))
            else:
                self._put(d, piece)

    def finish(self) -> list[Digest]:
        """Wait for every write; re-raise the first failure. Returns the digests written."""
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        for e in errors:
            if e is not None:
                raise e
        return list(self.written)


def read_chunked(ref: BlobRef, store: BlobStore) -> memoryview:
    """The bytes ``ref`` names, joined into one new writable buffer, each chunk read straight into its place.

    A large buffer is an anonymous mmap rather than a ``bytearray``: its pages arrive zeroed on first touch, which saves
    a full pass over memory on a large restore. It is not a numpy array either, because arrays rebuilt on a numpy
    buffer would have it as their base and be captured again as views of it.
    """
    out = memoryview(mmap.mmap(-1, ref.size) if ref.size >= _MMAP_FROM else bytearray(ref.size))
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
    if ref.size >= _PARALLEL_FROM:
        for f in [_executor().submit(read, d, o) for d, o in zip(ref.chunks, offsets, strict=True)]:
            f.result()
    else:
        for d, o in zip(ref.chunks, offsets, strict=True):
            read(d, o)
    return out
