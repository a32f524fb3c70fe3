"""The chunks of one hop, in memory, for as long as the hop lasts (a `kernelhop_snapshot.BlobStore`).

Captured chunks are held as views of the user's objects, not copies, and the store is dropped when the hop ends: a
kernel holding GiBs of arrays must not hold them twice, nor keep every version a hop ever sent. The views stay
valid while the hop runs because the kernel runs no user code meanwhile.

`put` does not re-hash: its only callers are the capturer, which hashed these very bytes a moment before, and the
hop's download path, whose bytes the gateway client verified. Reads are verified all the same: the snapshot engine
checks every chunk it gets from a store without `read_into` (so a buffer a user thread changed mid-hop is caught).
"""

from __future__ import annotations

from collections.abc import Iterable

from kernelhop_snapshot import Digest, MissingBlobError

Buffer = bytes | bytearray | memoryview


class HopStore:
    def __init__(self) -> None:
        self._blobs: dict[Digest, Buffer] = {}

    def has(self, digest: Digest) -> bool:
        return digest in self._blobs

    def get(self, digest: Digest) -> Buffer:
        try:
            return self._blobs[digest]
        except KeyError:
            raise MissingBlobError(digest, "this hop's chunks") from None

    def put(self, digest: Digest, data: Buffer) -> None:
        self._blobs.setdefault(digest, data)

    def missing(self, digests: Iterable[Digest]) -> list[Digest]:
        return [d for d in dict.fromkeys(digests) if d not in self._blobs]
