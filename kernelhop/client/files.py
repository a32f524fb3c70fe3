"""The kernel's working directory on a hop (docs/ARCHITECTURE.md, "Files"): sent as a content-addressed tree, and
what the cell created, changed or deleted there brought home.

Sending: the directory is read into a tree (kernelhop_snapshot.tree: only files whose size, mtime or inode changed
are read again; a `.kernelhopignore` and defaults leave things out; a size bound stops a hop that would carry too
much, naming the largest files), and the blobs the gateway lacks go up before the manifest that names the tree.

Homecoming: the tree the runtime left is compared with the one sent. A file the cell wrote is written here to a
temporary name and renamed over the local one, only if the local file is still as it was sent (same size, mtime and
inode; for a new file: still absent). Otherwise that is a conflict: the local file stays, the cell's version is
written beside it as `NAME.kernelhop-remote`, and a warning names both. A file the cell deleted is deleted here on
the same condition; if it changed here meanwhile it stays, and a warning says so. Symlinks do not come home.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable

from kernelhop_snapshot import Digest, FilesRef
from kernelhop_snapshot.blobstore import write_atomically
from kernelhop_snapshot.tree import FileEntry, Listing, Scan, TreeError, TreeScanner, is_inside, read_tree

from .gateway import GatewayConnection, KernelhopError
from .hop_store import HopStore

MAX_BYTES_SETTING = "KERNELHOP_FILES_MAX_BYTES"
DEFAULT_MAX_BYTES = 1 << 30
CONFLICT_SUFFIX = ".kernelhop-remote"
# How many paths a warning lists before "and N more".
LISTED = 8


class FilesError(KernelhopError):
    """The working directory cannot travel as it is (too large, a bad setting); the namespace is unchanged."""


def max_bytes() -> int:
    text = os.environ.get(MAX_BYTES_SETTING, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise FilesError(f"{MAX_BYTES_SETTING}={text!r}: give the most bytes of files one hop carries, e.g. 1073741824")
    return value


class WorkingFiles:
    """The working directory of one kernel's hops: what was sent last, and the stat cache that makes a scan cheap."""

    def __init__(self) -> None:
        self.scanner = TreeScanner()
        self._sent: tuple[str, Scan] | None = None
        self._told_ignored: list[str] = []

    def send(
        self, client: GatewayConnection, store: HopStore, progress: Callable[[int], None] | None = None
    ) -> FilesRef:
        """Read the working directory into a tree and upload what the gateway lacks of it; returns its ref."""
        root = os.getcwd()
        self._sent = None
        limit = max_bytes()
        try:
            scan = self.scanner.scan(root, store, limit)
        except TreeError as e:
            raise FilesError(f"{e}; the local namespace is unchanged") from None
        for path, target in scan.outside_links:
            _warn(f"kernelhop: symlink {path} -> {target} points outside the working directory; it is not sent")
        if scan.ignored != self._told_ignored:
            self._told_ignored = scan.ignored
            if scan.ignored:
                _warn(f"kernelhop: not sent to the runtime (ignored): {_listed(scan.ignored)}; see .kernelhopignore")
        listing = scan.listing
        lacking = [Digest.parse(d) for d in client.find_missing(sorted(str(d) for d in listing.blob_digests()))]
        unread = [d for d in lacking if not store.has(d)]
        from_disk = self.scanner.file_bytes(root, listing, unread) if unread else {}
        directories = set(listing.dirs.values())
        # Chunks before the directory blobs that name them, as the state's chunks go before their manifest.
        order = sorted(lacking, key=lambda d: d in directories)
        client.put_blobs({str(d): from_disk[d] if d in from_disk else store.get(d) for d in order}, progress)
        self._sent = (root, scan)
        return FilesRef(listing.root, _sys_path_inside(root, listing))

    def bring_home(self, client: GatewayConnection, files: FilesRef | None, gpu_class: str) -> None:
        """Apply what the cell did to the working directory, as the module docstring says."""
        if self._sent is None or files is None:
            return
        root, scan = self._sent
        sent = scan.listing
        if files.tree == sent.root:
            return

        def fetch(digests: list[Digest]) -> dict[Digest, bytes]:
            got = client.get_blobs([str(d) for d in digests])
            return {Digest.parse(k): v for k, v in got.items()}

        came = read_tree(files.tree, fetch, reuse=sent)
        written: list[str] = []
        conflicts: list[str] = []
        for d in sorted(set(came.dirs) - set(sent.dirs), key=len):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        for path, entry in sorted(came.files.items()):
            if sent.files.get(path) == entry:
                continue
            target = os.path.join(root, path)
            if not is_inside(os.path.realpath(os.path.dirname(target)), os.path.realpath(root)):
                _warn(f"kernelhop: {path} from the cell is not written: its directory here leads out of {root}")
                continue
            data = fetch(list(dict.fromkeys(entry.content.chunks)))
            content = b"".join(data[d] for d in entry.content.chunks)
            try:
                if self._unchanged_here(target, scan.stats.get(path)):
                    self._write(root, path, content, entry)
                    written.append(path)
                else:
                    _write_atomically(target + CONFLICT_SUFFIX, content, entry.executable)
                    conflicts.append(path)
            except OSError as e:
                _warn(f"kernelhop: the cell on {gpu_class} wrote {path}, but it could not be written here: {e}")
        deleted, kept = [], []
        for path in sorted(set(sent.files) - set(came.files)):
            target = os.path.join(root, path)
            if self._unchanged_here(target, scan.stats[path]):
                try:
                    os.unlink(target)
                except OSError as e:
                    _warn(f"kernelhop: the cell on {gpu_class} deleted {path}, but it could not be deleted here: {e}")
                    continue
                self.scanner.forget(path)
                deleted.append(path)
            elif os.path.lexists(target):
                kept.append(path)
        for d in sorted(set(sent.dirs) - set(came.dirs), key=len, reverse=True):
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                pass  # not empty here: it holds what this kernel made meanwhile, or ignored files
        if written or deleted:
            parts = [f"wrote {_listed(written)}"] if written else []
            parts += [f"deleted {_listed(deleted)}"] if deleted else []
            _warn(f"kernelhop: files from the cell on {gpu_class}: {'; '.join(parts)}")
        for path in conflicts:
            _warn(
                f"kernelhop: conflict: {path} changed here while the cell ran on {gpu_class}, so the cell's version "
                f"was not written over it; it is in {path}{CONFLICT_SUFFIX}"
            )
        for path in kept:
            _warn(f"kernelhop: conflict: the cell on {gpu_class} deleted {path}, but it changed here meanwhile; kept")

    def _unchanged_here(self, target: str, sent: tuple[int, int, int] | None) -> bool:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return sent is None
        return sent is not None and (st.st_size, st.st_mtime_ns, st.st_ino) == sent and stat.S_ISREG(st.st_mode)

    def _write(self, root: str, path: str, content: bytes, entry: FileEntry) -> None:
        target = os.path.join(root, path)
        _write_atomically(target, content, entry.executable)
        self.scanner.remember(path, os.lstat(target), entry)


def _write_atomically(target: str, content: bytes, executable: bool) -> None:
    mode = 0o777 & ~_umask()
    write_atomically(target, [content], mode=mode if executable else mode & 0o666)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sys_path_inside(root: str, listing: Listing) -> tuple[str, ...]:
    """sys.path entries inside the working directory, relative to it ("." for itself), in sys.path's order."""
    real_root = os.path.realpath(root)
    out: list[str] = []
    for entry in sys.path:
        if not isinstance(entry, str):
            continue
        real = os.path.realpath(entry or root)
        if real == real_root:
            rel = "."
        elif real.startswith(real_root + os.sep):
            rel = os.path.relpath(real, real_root).replace(os.sep, "/")
            if rel not in listing.dirs:
                continue  # ignored or not a directory: nothing of it travels
        else:
            continue
        if rel not in out:
            out.append(rel)
    return tuple(out)


def _listed(paths: list[str]) -> str:
    shown = ", ".join(paths[:LISTED])
    return shown + (f" and {len(paths) - LISTED} more" if len(paths) > LISTED else "")


def _warn(text: str) -> None:
    sys.stdout.flush()
    print(text, file=sys.stderr, flush=True)

