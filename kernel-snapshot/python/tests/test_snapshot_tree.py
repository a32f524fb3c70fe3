"""The working-directory tree (kernelhop_snapshot/tree.py): the shared fixture, and what a rescan reads again."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from kernelhop_snapshot import Digest, Manifest, MemoryBlobStore
from kernelhop_snapshot.tree import TreeScanner, read_tree

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_the_fixture_tree_reads_back_as_written() -> None:
    fx = json.loads((FIXTURES / "files-tree.json").read_text())
    manifest = Manifest.from_json(fx["manifest"])
    assert manifest.files is not None and manifest.files.sys_path == (".", "data")
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest
    blobs = {Digest.parse(k): base64.b64decode(v) for k, v in fx["blobs"].items()}
    listing = read_tree(manifest.files.tree, lambda ds: {d: blobs[d] for d in ds})
    assert sorted(listing.files) == ["data/copy.csv", "data/train.csv", "empty.txt", "utils.py"]
    assert listing.symlinks == {"latest.csv": "data/train.csv"}
    assert "out" in listing.dirs and listing.files["utils.py"].executable
    assert sorted(str(d) for d in listing.blob_digests()) == fx["tree_blobs"]


class CountingStore(MemoryBlobStore):
    def __init__(self) -> None:
        super().__init__()
        self.puts: list[Digest] = []

    def put_hashed(self, digest: Digest, data) -> None:
        self.puts.append(digest)
        super().put_hashed(digest, data)


def _age(path: Path, seconds: int = 60) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def test_a_rescan_reads_only_changed_files_and_content_decides(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.bin", "sub/b.bin"):
        (tmp_path / name).write_bytes(os.urandom(200_000))
        _age(tmp_path / name)
    scanner = TreeScanner()
    store = CountingStore()
    first = scanner.scan(str(tmp_path), store)
    read: list[str] = []
    real_open = open

    def spying_open(path, *args, **kwargs):
        read.append(os.path.relpath(path, tmp_path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spying_open)
    again = scanner.scan(str(tmp_path), MemoryBlobStore())
    assert again.listing.root == first.listing.root
    assert [p for p in read if p.endswith(".bin")] == []
    # Touched, same bytes: read again, same digests; changed: only that file gets new chunks.
    os.utime(tmp_path / "a.bin")
    with real_open(tmp_path / "sub" / "b.bin", "r+b") as f:
        f.write(b"changed")
    store.puts.clear()
    third = scanner.scan(str(tmp_path), store)
    assert sorted(p for p in read if p.endswith(".bin")) == ["a.bin", "sub/b.bin"]
    assert third.listing.files["a.bin"] == first.listing.files["a.bin"]
    assert third.listing.files["sub/b.bin"] != first.listing.files["sub/b.bin"]
    chunks = set(store.puts) - set(third.listing.dirs.values())
    assert chunks and chunks <= set(third.listing.files["sub/b.bin"].content.chunks)


def test_ignores_virtualenvs_and_links_out_of_the_tree(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "keep.txt").write_text("k")
    (tmp_path / "skip.log").write_text("s")
    (tmp_path / "inside").symlink_to("keep.txt")
    (tmp_path / "outside").symlink_to("/etc/hostname")
    (tmp_path / ".kernelhopignore").write_text("*.log\n")
    scan = TreeScanner().scan(str(tmp_path), MemoryBlobStore())
    assert sorted(scan.listing.files) == [".kernelhopignore", "keep.txt"]
    assert scan.listing.symlinks == {"inside": "keep.txt"}
    assert scan.ignored == ["env/", "skip.log"]
    assert scan.outside_links == [("outside", "/etc/hostname")]

