"""Which pages of a restored buffer were written since the restore, known without reading them.

A worker's warm hop captures a state it restored a moment ago; hashing all of it to find the few bytes a cell changed
costs a pass over memory per hop. So a large buffer restored with tracking lives in a *private* mapping of a memfd
that holds the restored bytes. Reading maps the file's pages; the first write to a page gives the process a private
anonymous copy of it (copy on write). ``/proc/self/pagemap`` tells the two apart: bit 61 ("file page or shared
anonymous") is set on a page still mapped from the file; bit 63 (present) and bit 62 (swapped) say whether a page is
mapped at all. A page present and anonymous, or swapped, was written; any other page holds the file's bytes, which
are the restored bytes. Every way memory can be written goes through copy on write: stores by any code, read(2) and
O_DIRECT into the buffer, DMA into pages pinned for writing (pinning breaks copy on write first). Even dropping the
private copies (madvise MADV_DONTNEED) brings back the restored bytes, which the tracker assumes of unwritten pages.

So a chunk none of whose pages was written since the restore still has its restore-time digest. Once written, a page
stays anonymous, and its chunk is hashed at every later capture: never a wrong answer, only a slower one. A written
page costs a second page of memory while the buffer lives (the file's and the copy), so this is for workers, whose
host holds one session's state, not for the user's kernel.

A probe at start-up checks all of this on the running kernel; where it fails (no memfd, no pagemap, other flags),
``WriteTracker.available`` is False with the reason, and restores use plain memory and captures hash as before.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from .manifest import BlobRef

_PAGE = mmap.PAGESIZE
# The top byte of a pagemap entry: bit 63 present, 62 swapped, 61 file page or shared anonymous.
_PRESENT, _SWAPPED, _FILE = 0x80, 0x40, 0x20
# Maps each top byte to 1 when the page was written since it was mapped from the file, else 0.
_WRITTEN = bytes(1 if (b & _SWAPPED) or ((b & _PRESENT) and not (b & _FILE)) else 0 for b in range(256))


@dataclass(frozen=True)
class _Region:
    size: int
    ref: BlobRef


class WriteTracker:
    """Restores large buffers into tracked memory and says which of their chunks are unchanged since."""

    def __init__(self) -> None:
        self.available, self.reason = _probe()
        # Start address -> region, for the tracked mappings alive now (each forgets itself when its mapping dies).
        # No lock: a lock here could deadlock with the garbage collector running _forget inside it, and single
        # dict operations are atomic.
        self._regions: dict[int, _Region] = {}

    def restored_buffer(self, ref: BlobRef, fill: Callable[[int], None]) -> memoryview | None:
        """A writable buffer of ``ref.size`` bytes, tracked from now on, holding what ``fill`` wrote into the file
        descriptor it is given (``ref``'s bytes, with pwrite at their offsets); None where tracking is not available.
        Nothing but ``fill`` can write the file before it is mapped: only this call holds it."""
        if not self.available or ref.size == 0:
            return None
        fd = os.memfd_create("kernelhop-restored", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, ref.size)
            fill(fd)
            private = mmap.mmap(fd, ref.size, flags=mmap.MAP_PRIVATE)
        finally:
            os.close(fd)  # the mapping keeps the file alive, and nothing else can reach it
        out = memoryview(private)
        start = _address(out)
        self._regions[start] = _Region(ref.size, ref)
        # Forgotten before the pages are unmapped, so a later mapping at this address is never taken for this one.
        weakref.finalize(private, self._forget, start)
        return out

    def unchanged(self, view: memoryview) -> tuple[BlobRef, list[bool]] | None:
        """For a buffer that is exactly a tracked region: its ref at restore, and for each of its chunks whether
        no page of it was written since. None for any other buffer (it is hashed as usual)."""
        if not self._regions:
            return None
        start = _address(view)
        region = self._regions.get(start) if start is not None else None
        if region is None or region.size != view.nbytes:
            return None
        written = _written_pages(start, region.size)
        clean, offset = [], 0
        for d in region.ref.chunks:
            first, last = offset // _PAGE, (offset + d.size - 1) // _PAGE
            clean.append(written.find(1, first, last + 1) < 0)
            offset += d.size
        return region.ref, clean

    def _forget(self, start: int) -> None:
        self._regions.pop(start, None)


def _address(view: memoryview) -> int | None:
    """Where ``view``'s bytes start in memory, or None if that cannot be learnt without copying."""
    if view.nbytes == 0:
        return None
    if not view.readonly:
        anchor = ctypes.c_char.from_buffer(view)
        try:
            return ctypes.addressof(anchor)
        finally:
            del anchor
    numpy = sys.modules.get("numpy")  # a read-only buffer here is almost always a numpy array's
    if numpy is None:
        return None
    return int(numpy.frombuffer(view, dtype=numpy.uint8).__array_interface__["data"][0])


def _written_pages(start: int, size: int) -> bytes:
    """One byte per page of [start, start + size): 1 where the page was written since it was mapped from the file."""
    first = start // _PAGE
    count = (start + size - 1) // _PAGE - first + 1
    with open("/proc/self/pagemap", "rb", buffering=0) as f:
        entries = os.pread(f.fileno(), 8 * count, 8 * first)
    if len(entries) != 8 * count:
        raise OSError(f"/proc/self/pagemap returned {len(entries)} bytes for {count} pages")
    return entries[7::8].translate(_WRITTEN)  # little-endian: the eighth byte of each entry holds bits 56-63


def _probe() -> tuple[bool, str]:
    """Whether this kernel shows a copy-on-write page of a private memfd mapping as written, and only that one."""
    if sys.platform != "linux" or not hasattr(os, "memfd_create"):
        return False, "write tracking needs Linux (memfd_create and /proc/self/pagemap)"
    try:
        fd = os.memfd_create("kernelhop-probe", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, 3 * _PAGE)
            os.pwrite(fd, b"\1" * (3 * _PAGE), 0)
            with mmap.mmap(fd, 3 * _PAGE, flags=mmap.MAP_PRIVATE) as m:
                view = memoryview(m)
                try:
                    start = _address(view)
                    assert start is not None
                    _ = view[0], view[2 * _PAGE]  # map pages 0 and 2 from the file
                    view[_PAGE] = 2  # and write page 1
                    written = _written_pages(start, 3 * _PAGE)
                finally:
                    view.release()
        finally:
            os.close(fd)
    except OSError as e:
        return False, f"write tracking is not available here: {e}"
    if written != b"\0\1\0":
        return False, f"this kernel's pagemap does not show copy on write as expected (pages: {list(written)})"
    return True, ""
