"""The directory a session's cells run in: the kernel's working tree, laid out from the runtime's cache.

Before a cell the worker makes this directory hold the tree the kernel sent (docs/ARCHITECTURE.md, "Files"),
writing only files that differ from what it holds already, changes into it and puts the tree's sys.path entries
first, so relative paths and the notebook's own modules work as they do in the kernel. After the cell it reads the
directory back into a tree (only files whose stat changed are read), which the snapshot names: what the cell
created, changed or deleted there goes home.

Files are written as copies of the cached chunks, not hardlinks: a cell writing a file in place would otherwise
write into the cache. Each file laid out gets one fixed, old mtime, so any write by the cell gives it another and the
scan after the cell never takes a changed file for an unchanged one, however fine the file system's clock.
"""

from __future__ import annotations

import importlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable

from kernelhop_snapshot import BlobStore, Digest, FilesRef
from kernelhop_snapshot.blobstore import write_atomically
from kernelhop_snapshot.tree import Listing, TooLargeError, TreeScanner, read_tree

# 2000-01-01T00:00:00Z: the mtime of every file laid out (old enough for the scanner to trust, past 1980 for zip).
LAID_OUT_MTIME_NS = 946_684_800 * 1_000_000_000
# What a hop may bring home, as in the kernel (KERNELHOP_FILES_MAX_BYTES on the runtime).
DEFAULT_MAX_BYTES = 1 << 30


class WorkDir:
    def __init__(self) -> None:
        self.path: str | None = None
        self._listing: Listing | None = None
        self._sent: FilesRef | None = None
        self._scanner = TreeScanner()
        self._sys_path: list[str] = []
        self._started_in = os.getcwd()

    def enter(self, files: FilesRef | None, read_blob: Callable[[Digest], bytes | memoryview]) -> None:
        """Lay out ``files`` and go into it; None (the hop carries none): back to where the worker started."""
        self._sent = files
        if files is None:
            os.chdir(self._started_in)
            self._set_sys_path([])
            return
        if self.path is None:
            self.path = tempfile.mkdtemp(prefix="kernelhop-files-")
            _made.append(self.path)
        listing = read_tree(files.tree, lambda ds: {d: read_blob(d) for d in ds}, reuse=self._listing)
        changed = self._lay_out(listing, read_blob)
        self._listing = listing
        os.chdir(self.path)
        self._set_sys_path([os.path.normpath(os.path.join(self.path, p)) for p in files.sys_path])
        _forget_modules(self.path, changed)

    def _set_sys_path(self, entries: list[str]) -> None:
        for entry in self._sys_path:
            while entry in sys.path:
                sys.path.remove(entry)
        self._sys_path = entries
        sys.path[:0] = entries

    def capture(self, store: BlobStore, stderr) -> FilesRef | None:
        """The directory as it is now, as a tree in ``store``; the tree as it came if what the cell left is over the
        bound (said on ``stderr``)."""
        if self._sent is None or self.path is None:
            return None
        limit = int(os.environ.get("KERNELHOP_FILES_MAX_BYTES", DEFAULT_MAX_BYTES))
        try:
            scan = self._scanner.scan(self.path, store, limit)
        except TooLargeError as e:
            print(f"kernelhop: the files the cell left do not come home: {e}", file=stderr, flush=True)
            return self._sent
        self._listing = scan.listing
        return FilesRef(scan.listing.root, self._sent.sys_path)

    def _lay_out(self, listing: Listing, read_blob: Callable[[Digest], bytes | memoryview]) -> set[str]:
        """Make the directory hold ``listing``; returns the absolute paths written or removed."""
        assert self.path is not None
        root = self.path
        changed: set[str] = set()
        previous = self._listing
        if previous is not None:
            for path in [*previous.files, *previous.symlinks]:
                if path not in listing.files and path not in listing.symlinks:
                    target = os.path.join(root, path)
                    _remove(target)
                    self._scanner.forget(path)
                    changed.add(target)
        for d in sorted(listing.dirs, key=len):
            if d:
                target = os.path.join(root, d)
                if os.path.lexists(target) and not os.path.isdir(target):
                    os.unlink(target)
                os.makedirs(target, exist_ok=True)
        for path, entry in listing.files.items():
            target = os.path.join(root, path)
            try:
                st = os.lstat(target)
            except FileNotFoundError:
                st = None
            if st is not None and self._scanner.holds(path, st, entry):
                if st.st_mtime_ns != LAID_OUT_MTIME_NS:
                    os.utime(target, ns=(LAID_OUT_MTIME_NS, LAID_OUT_MTIME_NS))
                    self._scanner.remember(path, os.lstat(target), entry)
                continue
            if st is not None and stat.S_ISDIR(st.st_mode):
                shutil.rmtree(target)
            pieces = (read_blob(d) for d in entry.content.chunks)
            mode = 0o755 if entry.executable else 0o644
            # Not fsynced: this directory is rebuilt from the cache whenever a worker starts.
            write_atomically(target, pieces, durable=False, mode=mode, mtime_ns=LAID_OUT_MTIME_NS)
            self._scanner.remember(path, os.lstat(target), entry)
            changed.add(target)
        for path, link in listing.symlinks.items():
            target = os.path.join(root, path)
            if os.path.islink(target) and os.readlink(target) == link:
                continue
            _remove(target)
            os.symlink(link, target)
            changed.add(target)
        if previous is not None:
            for d in sorted(set(previous.dirs) - set(listing.dirs), key=len, reverse=True):
                try:
                    os.rmdir(os.path.join(root, d))
                except OSError:
                    pass  # not empty: it holds what the cell made and the kernel ignores
        importlib.invalidate_caches()
        return changed


# The directories this process made: removed when it ends (remove_all; the worker ends with os._exit, no atexit).
_made: list[str] = []


def remove_all() -> None:
    for path in _made:
        shutil.rmtree(path, ignore_errors=True)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _forget_modules(root: str, changed: set[str]) -> None:
    """Drop the modules imported from files just rewritten or removed, so the cell imports the kernel's version."""
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path in changed and path.startswith(root):
            del sys.modules[name]
