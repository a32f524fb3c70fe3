"""Content-addressed blob stores: the protocol the snapshot engine reads and writes through, and two stores.

Every ``put`` verifies that the bytes hash to the digest it is given (no store trusts its caller), and every blob
is immutable once stored, so a ``put`` of a digest already present writes nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from .digest import Digest, digest_of
from .errors import CorruptBlobError, MissingBlobError

Buffer = bytes | bytearray | memoryview


@runtime_checkable
class BlobStore(Protocol):
    def has(self, digest: Digest) -> bool: ...

    def get(self, digest: Digest) -> bytes | memoryview: ...

    def put(self, digest: Digest, data: Buffer) -> None: ...

    def missing(self, digests: Iterable[Digest]) -> list[Digest]: ...


def _verify(digest: Digest, data: Buffer) -> None:
    actual = digest_of(data)
    if actual != digest:
        raise CorruptBlobError(digest, f"the bytes given have digest {actual}")


def _unique_missing(store: BlobStore, digests: Iterable[Digest]) -> list[Digest]:
    seen: set[Digest] = set()
    out = []
    for d in digests:
        if d not in seen:
            seen.add(d)
            if not store.has(d):
                out.append(d)
    return out


class MemoryBlobStore:
    """A dict of digest -> bytes; for tests, and for a worker that keeps chunks in memory."""

    def __init__(self) -> None:
        self._blobs: dict[Digest, bytes] = {}

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, digest: object) -> bool:
        return digest in self._blobs

    def has(self, digest: Digest) -> bool:
        return digest in self._blobs

    def get(self, digest: Digest) -> bytes:
        try:
            return self._blobs[digest]
        except KeyError:
            raise MissingBlobError(digest, "the memory store") from None

    def read_into(self, digest: Digest, out: memoryview) -> None:
        """Copy the blob into ``out`` (exactly ``digest.size`` bytes)."""
        out[:] = self.get(digest)

    def put(self, digest: Digest, data: Buffer) -> None:
        if digest in self._blobs:
            return
        _verify(digest, data)
        self.put_hashed(digest, data)

    def put_hashed(self, digest: Digest, data: Buffer) -> None:
        """``put`` for a caller that has just computed ``digest`` from these very bytes (no second hash)."""
        # Copy: ``data`` is often a view of a live array the user may change after the capture.
        self._blobs[digest] = bytes(data)

    def missing(self, digests: Iterable[Digest]) -> list[Digest]:
        return _unique_missing(self, digests)

    def digests(self) -> set[Digest]:
        return set(self._blobs)


class DirectoryBlobStore:
    """Blobs as files ``<root>/<hash[0:2]>/<hash>``, raw bytes, the layout the gateway and runtime caches share.

    Writes go to a temporary file in the blob's own directory (so the rename cannot cross file systems), are
    fsynced, then renamed into place with ``os.replace``: a reader sees a whole blob or none. Reads verify size and
    hash, so a blob damaged on disk is reported, never restored.

    ``durable=False`` skips the fsync, for a cache (a runtime's): a blob a crash leaves torn fails the hash check on
    read and is fetched again, so the cache needs no durability, and fsync is the slowest step of a capture.
    """

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = os.fspath(root)
        self.durable = durable
        os.makedirs(self.root, exist_ok=True)

    def path(self, digest: Digest) -> str:
        return os.path.join(self.root, digest.hash[:2], digest.hash)

    def has(self, digest: Digest) -> bool:
        try:
            return os.stat(self.path(digest)).st_size == digest.size
        except FileNotFoundError:
            return False

    def missing(self, digests: Iterable[Digest]) -> list[Digest]:
        return _unique_missing(self, digests)

    def get(self, digest: Digest) -> bytes:
        path = self.path(digest)
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.read()
        except FileNotFoundError:
            raise MissingBlobError(digest, f"the directory store {self.root}") from None
        if len(data) != digest.size:
            raise CorruptBlobError(digest, f"{path} holds {len(data)} bytes, expected {digest.size}")
        actual = digest_of(data)
        if actual != digest:
            raise CorruptBlobError(digest, f"{path} hashes to {actual}")
        return data

    def read_into(self, digest: Digest, out: memoryview) -> None:
        """Read the blob straight into ``out`` (exactly ``digest.size`` bytes), then verify it there."""
        path = self.path(digest)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise MissingBlobError(digest, f"the directory store {self.root}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size != digest.size:
                raise CorruptBlobError(digest, f"{path} holds {size} bytes, expected {digest.size}")
            got = 0
            while got < size:
                n = f.readinto(out[got:])
                if not n:
                    raise CorruptBlobError(digest, f"{path} ended after {got} of {size} bytes")
                got += n
        actual = digest_of(out)
        if actual != digest:
            raise CorruptBlobError(digest, f"{path} hashes to {actual}")

    def put(self, digest: Digest, data: Buffer) -> None:
        if self.has(digest):
            return
        _verify(digest, data)
        self.put_hashed(digest, data)

    def put_hashed(self, digest: Digest, data: Buffer) -> None:
        """``put`` for a caller that has just computed ``digest`` from these very bytes (no second hash)."""
        os.makedirs(os.path.join(self.root, digest.hash[:2]), exist_ok=True)
        write_atomically(self.path(digest), [data], durable=self.durable, suffix=".tmp")


def write_atomically(
    target: str,
    pieces: Iterable[Buffer],
    *,
    durable: bool = True,
    mode: int | None = None,
    mtime_ns: int | None = None,
    suffix: str = ".kernelhop-tmp",
) -> None:
    """Write ``pieces`` to a temporary name in ``target``'s directory (so the rename cannot cross file systems),
    fsync unless not ``durable``, set ``mode`` and ``mtime_ns`` if given, then rename: a reader sees the old file or
    the new one, whole, never a torn one."""
    directory, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory)
    try:
        with open(fd, "wb", buffering=0) as f:
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    view = view[f.write(view):]
            if durable:
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
