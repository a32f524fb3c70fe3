"""A directory as a content-addressed tree (docs/ARCHITECTURE.md, "Files"): the working directory a hop carries.

As REAPI's Directory messages and restic's tree blobs: each directory is one blob (canonical JSON) naming its files
(size, executable bit, FastCDC chunks, the chunking of the snapshot format), its subdirectories by the digest of
their blob, and its symlinks. Equal directories are equal blobs, so an unchanged subtree is one digest and files
are stored once, however many trees and users name them.

``TreeScanner`` reads a directory into a tree, hashing only files whose size, mtime or inode changed since its last
scan (content still decides: a touched file with the same bytes gets the same digests), within the ignore rules
(``.kernelhopignore``, gitignore syntax, plus defaults) and a size bound. ``read_tree`` reads a tree back from its
blobs, reusing the subtrees another listing already holds.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pathspec

from .blobstore import BlobStore
from .chunking import Chunked, ChunkWriter
from .digest import Digest, digest_of
from .manifest import BlobRef, ManifestError, canonical_json

KIND = "kernelhop.tree"
VERSION = 1
IGNORE_FILE = ".kernelhopignore"
# Never worth carrying: version control, virtual environments, caches, notebook checkpoints, editors' litter.
DEFAULT_IGNORES = (
    ".git/",
    ".hg/",
    ".svn/",
    ".venv/",
    "venv/",
    "__pycache__/",
    ".ipynb_checkpoints/",
    "node_modules/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".DS_Store",
    "*.kernelhop-tmp",
)
# A cached (size, mtime, inode) is trusted only for a file last changed this long before it was recorded: a write
# within the file system's timestamp granularity after a scan would otherwise leave the stat unchanged (git's
# "racily clean" entries).
RACY_NS = 2_000_000_000


class TreeError(ValueError):
    """A tree blob that does not follow the format, or a directory that cannot travel as it is."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    content: BlobRef
    executable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"type": "file", **self.content.to_json(), "executable": self.executable}


@dataclass
class Listing:
    """A tree read flat: paths (POSIX, relative to its root) of files, symlinks and directories (the root is "")."""

    files: dict[str, FileEntry] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    # Every directory, empty ones included, with the digest of its blob (the root's too, under "").
    dirs: dict[str, Digest] = field(default_factory=dict)

    @property
    def root(self) -> Digest:
        return self.dirs[""]

    def total_bytes(self) -> int:
        return sum(e.content.size for e in self.files.values())

    def blob_digests(self) -> set[Digest]:
        """Every blob the tree names, its directories' and its files' chunks."""
        out = set(self.dirs.values())
        for e in self.files.values():
            out.update(e.content.chunks)
        return out


def write_tree(
    files: Mapping[str, FileEntry],
    symlinks: Mapping[str, str],
    dirs: Iterable[str],
    put: Callable[[Digest, bytes], None],
) -> Listing:
    """Encode a flat tree into directory blobs, deepest first (a blob's children are stored before it), via ``put``."""
    children: dict[str, dict[str, Any]] = {"": {}}
    for d in sorted(set(dirs) | {_parent(p) for p in [*files, *symlinks]}, key=lambda p: p.count("/")):
        _add_dir(children, d)
    for path, entry in files.items():
        children[_parent(path)][_base(path)] = entry.to_json()
    for path, target in symlinks.items():
        children[_parent(path)][_base(path)] = {"type": "symlink", "target": target}
    digests: dict[str, Digest] = {}
    for d in sorted(children, key=lambda p: -p.count("/") if p else 1):
        entries = children[d]
        for name, entry in entries.items():
            if entry is None:
                entries[name] = {"type": "dir", "tree": str(digests[_join(d, name)])}
        data = canonical_json({"kind": KIND, "version": VERSION, "entries": entries})
        digests[d] = digest_of(data)
        put(digests[d], data)
    return Listing(dict(files), dict(symlinks), digests)


def _add_dir(children: dict[str, dict[str, Any]], d: str) -> None:
    while d not in children:
        children[d] = {}
        parent = _parent(d)
        _add_dir(children, parent)
        children[parent][_base(d)] = None  # filled with the digest once the subdirectory is encoded


def parse_tree_blob(data: bytes | bytearray | memoryview, where: str) -> dict[str, Any]:
    """The entries of one directory blob, validated: name -> FileEntry, Digest (a directory) or str (a symlink)."""
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise TreeError(f"{where}: a tree blob is UTF-8 JSON ({e})") from None
    except RecursionError:
        raise TreeError(f"{where}: a tree blob nests deeper than any tree blob does") from None
    if not isinstance(obj, dict) or set(obj) != {"kind", "version", "entries"} or obj["kind"] != KIND:
        raise TreeError(f"{where}: a tree blob is {{kind: {KIND!r}, version, entries}}")
    if obj["version"] != VERSION:
        raise TreeError(f"{where}: tree version {obj['version']!r}; this code reads version {VERSION}")
    if not isinstance(obj["entries"], dict):
        raise TreeError(f"{where}: entries must be an object")
    out: dict[str, Any] = {}
    for name, e in obj["entries"].items():
        at = f"{where}/{name}"
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise TreeError(f"{at}: {name!r} is not a file name")
        kind = e.get("type") if isinstance(e, dict) else None
        try:
            if kind == "file" and set(e) == {"type", "size", "chunks", "executable"}:
                if not isinstance(e["executable"], bool):
                    raise TreeError(f"{at}: executable must be true or false")
                content = BlobRef.from_json({"size": e["size"], "chunks": e["chunks"]}, at)
                out[name] = FileEntry(content, e["executable"])
            elif kind == "dir" and set(e) == {"type", "tree"} and isinstance(e["tree"], str):
                out[name] = Digest.parse(e["tree"])
            elif kind == "symlink" and set(e) == {"type", "target"} and isinstance(e["target"], str):
                out[name] = e["target"]
            else:
                raise TreeError(
                    f"{at}: an entry is a file {{size, chunks, executable}}, a dir {{tree}} or a symlink {{target}}"
                )
        except TreeError:
            raise
        except (ManifestError, ValueError) as err:
            raise TreeError(f"{at}: {err}") from None
    return out


def read_tree(
    root: Digest,
    fetch: Callable[[list[Digest]], Mapping[Digest, bytes | bytearray | memoryview]],
    reuse: Listing | None = None,
) -> Listing:
    """The tree under ``root``; ``fetch`` gets directory blobs, one level at a time. Subtrees ``reuse`` holds under
    the same path and digest are taken from it, not fetched (what an unchanged subtree costs: nothing)."""
    out = Listing()
    level = [("", root)]
    while level:
        wanted = [d for p, d in level if reuse is None or reuse.dirs.get(p) != d]
        blobs = fetch(list(dict.fromkeys(wanted))) if wanted else {}
        following: list[tuple[str, Digest]] = []
        for path, digest in level:
            out.dirs[path] = digest
            if reuse is not None and reuse.dirs.get(path) == digest:
                _copy_subtree(reuse, path, out)
                continue
            for name, entry in parse_tree_blob(blobs[digest], path or ".").items():
                child = _join(path, name)
                if isinstance(entry, FileEntry):
                    out.files[child] = entry
                elif isinstance(entry, Digest):
                    following.append((child, entry))
                else:
                    out.symlinks[child] = entry
        level = following
    return out


def _copy_subtree(src: Listing, path: str, out: Listing) -> None:
    prefix = f"{path}/" if path else ""
    for table, into in ((src.files, out.files), (src.symlinks, out.symlinks), (src.dirs, out.dirs)):
        into.update((p, v) for p, v in table.items() if p.startswith(prefix))  # type: ignore[attr-defined]


# -- reading a directory -----------------------------------------------------------------------------------------


class IgnoreRules:
    """What does not travel: DEFAULT_IGNORES, virtual environments (a directory holding pyvenv.cfg), and the
    patterns of ``<root>/.kernelhopignore`` (gitignore syntax, relative to the root; ``!`` re-includes)."""

    def __init__(self, root: str) -> None:
        lines = list(DEFAULT_IGNORES)
        try:
            with open(os.path.join(root, IGNORE_FILE), encoding="utf-8") as f:
                lines += f.read().splitlines()
        except FileNotFoundError:
            pass
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(self, path: str, is_dir: bool, abspath: str) -> bool:
        if is_dir and os.path.exists(os.path.join(abspath, "pyvenv.cfg")):
            return True
        return self._spec.match_file(f"{path}/" if is_dir else path)


@dataclass
class Scan:
    listing: Listing
    # (size, mtime_ns, inode) of each file as it was read: what homecoming checks the local file against.
    stats: dict[str, tuple[int, int, int]]
    ignored: list[str]
    # Symlinks not followed: (path, target) of those pointing outside the tree (or nowhere).
    outside_links: list[tuple[str, str]]


class TooLargeError(TreeError):
    def __init__(self, root: str, total: int, limit: int, largest: list[tuple[str, int]]) -> None:
        self.largest = largest
        names = ", ".join(f"{p} ({format_bytes(n)})" for p, n in largest)
        super().__init__(
            f"the working directory {root} holds {format_bytes(total)} of files, over the {format_bytes(limit)} a "
            f"hop carries. Largest: {names}. Leave them out with lines in {os.path.join(root, IGNORE_FILE)} "
            f"(gitignore syntax, e.g. `{largest[0][0] if largest else 'data/'}`), keep big data where the runtime "
            "reads it itself (an S3 URL, a shared volume), raise the bound (KERNELHOP_FILES_MAX_BYTES), or run the "
            "cell with `%%gpu CLASS --no-files`"
        )


class TreeScanner:
    """Reads one directory into a tree, hop after hop, hashing only what changed since its last scan."""

    def __init__(self) -> None:
        # path -> (size, mtime_ns, inode, recorded at (ns), entry)
        self._known: dict[str, tuple[int, int, int, int, FileEntry]] = {}

    def remember(self, path: str, st: os.stat_result, entry: FileEntry, recorded_ns: int | None = None) -> None:
        """Record that the file at ``path`` with stat ``st`` holds ``entry`` (as a scan, or a write of ours, found)."""
        self._known[path] = (st.st_size, st.st_mtime_ns, st.st_ino, recorded_ns or time.time_ns(), entry)

    def holds(self, path: str, st: os.stat_result, entry: FileEntry) -> bool:
        """Whether the file at ``path``, with stat ``st``, is known to hold ``entry`` (as last scanned or written)."""
        known = self._known.get(path)
        return known is not None and known[:3] == (st.st_size, st.st_mtime_ns, st.st_ino) and known[4] == entry

    def forget(self, path: str) -> None:
        self._known.pop(path, None)

    def scan(self, root: str, store: BlobStore, limit: int | None = None) -> Scan:
        """Read ``root`` into ``store`` (directory blobs, and the chunks of files read now); raises TooLargeError
        past ``limit`` bytes of files, before reading any."""
        rules = IgnoreRules(root)
        real_root = os.path.realpath(root)
        found: list[tuple[str, str, os.stat_result]] = []
        dirs: list[str] = []
        symlinks: dict[str, str] = {}
        ignored: list[str] = []
        outside: list[tuple[str, str]] = []
        stack = [""]
        while stack:
            rel = stack.pop()
            base = os.path.join(root, rel) if rel else root
            try:
                entries = sorted(os.scandir(base), key=lambda e: e.name)
            except OSError:
                continue  # unreadable here: it cannot travel either
            for e in entries:
                path = _join(rel, e.name)
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if rules.ignored(path, is_dir, e.path):
                    ignored.append(f"{path}/" if is_dir else path)
                elif stat.S_ISLNK(st.st_mode):
                    target = os.readlink(e.path)
                    resolved = os.path.realpath(e.path)
                    if os.path.isabs(target) or not is_inside(resolved, real_root) or not os.path.exists(resolved):
                        outside.append((path, target))
                    else:
                        symlinks[path] = target
                elif is_dir:
                    dirs.append(path)
                    stack.append(path)
                elif stat.S_ISREG(st.st_mode):
                    found.append((path, e.path, st))
        total = sum(st.st_size for _, _, st in found)
        if limit is not None and total > limit:
            largest = sorted(((p, st.st_size) for p, _, st in found), key=lambda x: -x[1])[:5]
            raise TooLargeError(root, total, limit, largest)
        writer = ChunkWriter(store)
        now = time.time_ns()
        files: dict[str, FileEntry] = {}
        stats: dict[str, tuple[int, int, int]] = {}
        known: dict[str, tuple[int, int, int, int, FileEntry]] = {}
        for path, abspath, st in found:
            key = (st.st_size, st.st_mtime_ns, st.st_ino)
            executable = bool(st.st_mode & stat.S_IXUSR)
            cached = self._known.get(path)
            if cached is not None and cached[:3] == key and st.st_mtime_ns < cached[3] - RACY_NS:
                entry = cached[4]
                recorded = cached[3]
            else:
                content = _chunk_file(abspath, writer, cached[4].content if cached else None)
                if content is None:
                    continue  # gone or unreadable since the walk
                entry, recorded = FileEntry(content, executable), now
            if entry.executable != executable:
                entry = FileEntry(entry.content, executable)
            files[path] = entry
            stats[path] = key
            known[path] = (*key, recorded, entry)
        writer.finish()
        self._known = known
        listing = write_tree(files, symlinks, dirs, store.put)
        return Scan(listing, stats, ignored, outside)

    def file_bytes(self, root: str, listing: Listing, digests: Iterable[Digest]) -> dict[Digest, bytes]:
        """The bytes of those chunks of ``listing``'s files, read from ``root`` again (for a store that lacks
        chunks a scan found unchanged); a file changed since its scan raises TreeError."""
        wanted = set(digests)
        out: dict[Digest, bytes] = {}
        for path, entry in listing.files.items():
            if wanted.isdisjoint(entry.content.chunks):
                continue
            with open(os.path.join(root, path), "rb") as f:
                for d in entry.content.chunks:
                    data = f.read(d.size)
                    if d in wanted:
                        if digest_of(data) != d:
                            raise TreeError(f"{path} changed while the hop read it; run the cell again")
                        out[d] = data
        return out


def _chunk_file(path: str, writer: ChunkWriter, hint: BlobRef | None) -> BlobRef | None:
    # Read, not mapped: a mapping of a file another process truncates meanwhile would crash the reader (SIGBUS).
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return writer.add_buffer(data, None if hint is None else Chunked(hint)).ref


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _base(path: str) -> str:
    return path.rpartition("/")[2]


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
