"""Disk faults (issue 13): the gateway's data directory on a small tmpfs that fills up during uploads (root mounts
it; unmounted after), and the runtime's chunk cache wiped mid-session, between hops and while a cell runs. After
each: no snapshot or ref names a missing blob, the kernel's state is intact, the user is told what happened, and
the next hop works."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelhop_testing import Kernel

from faults import FaultStack, check_store, printed, when

SMALL = "48m"  # the full disk; the state below does not fit on it


def mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.fail("the full-disk test mounts a tmpfs and needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "kernelhop-full", str(where)], check=True)


@pytest.fixture
def full_disk_stack(tmp_path: Path) -> Iterator[FaultStack]:
    stack = FaultStack(tmp_path)
    stack.data.mkdir()
    mount_tmpfs(stack.data, SMALL)
    try:
        yield stack.start()
    finally:
        stack.stop()
        subprocess.run(["umount", str(stack.data)], check=False)


def tmp_files(data: Path) -> list[Path]:
    return list((data / "cas").glob("*/.*.tmp"))


def test_a_full_disk_during_uploads_fails_clearly_and_loses_nothing(full_disk_stack: FaultStack) -> None:
    stack = full_disk_stack
    kernel = Kernel(stack.env())
    try:
        first = kernel.run("%%gpu h100\nsmall = list(range(10))")
        assert first.status == "ok", first.error_text
        saved = kernel.run("%snapshot save small")
        assert saved.status == "ok", saved.error_text
        snapshots = check_store(stack.data)

        # The cell's result does not fit: the runtime's upload of it is refused, and nothing comes home.
        result = kernel.run("%%gpu h100\nimport os\nfresh = os.urandom(64 << 20)\nsmall.append(-1)")
        assert result.status == "error", "a 64 MiB result fitted on a 48 MiB disk"
        assert "disk is full" in result.error_text and "unchanged" in result.error_text, result.error_text
        assert kernel.value("small") == str(list(range(10)))
        assert kernel.value("'fresh' in globals()") == "False"
        assert check_store(stack.data) == snapshots

        # The kernel's own upload does not fit: the hop, then a save, are refused.
        assert kernel.run("import hashlib, os\nbig = os.urandom(64 << 20)\ndigest = hashlib.sha256(big).hexdigest()").status == "ok"

        hop = kernel.run("%%gpu h100\nsmall.append(len(big))")
        assert hop.status == "error", "a 64 MiB upload fitted on a 48 MiB disk"
        told = hop.error_text
        assert "disk is full" in told and "unchanged" in told and "[internal]" not in told, told
        save = kernel.run("%snapshot save big")
        assert save.status == "error"
        assert "disk is full" in save.error_text and "[internal]" not in save.error_text, save.error_text

        assert kernel.value("small") == str(list(range(10)))
        assert kernel.value("hashlib.sha256(big).hexdigest() == digest") == "True"
        assert check_store(stack.data) == snapshots
        assert tmp_files(stack.data) == [], "a failed write left its temporary file on the full disk"

        subprocess.run(["mount", "-o", "remount,size=512m", str(stack.data)], check=True)
        again = kernel.run("%%gpu h100\nsmall.append(len(big))")
        assert again.status == "ok", again.error_text
        assert kernel.value("small[-1]") == str(64 << 20)
        saved = kernel.run("%snapshot save big")
        assert saved.status == "ok", saved.error_text
        assert check_store(stack.data) > snapshots
    finally:
        kernel.shutdown()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[FaultStack]:
    s = FaultStack(tmp_path).start()
    yield s
    s.stop()


def wipe(cache: Path) -> int:
    """Everything under the runtime's cache, as `rm -rf cache/*` would; returns how many entries went."""
    entries = list(cache.iterdir())
    for entry in entries:
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return len(entries)


def test_the_runtime_cache_wiped_between_hops_of_a_session(stack: FaultStack) -> None:
    kernel = Kernel(stack.env())
    try:
        assert kernel.run("import os\nstate = {'a': os.urandom(1 << 20), 'n': 1}").status == "ok"
        for n in (2, 3):
            hop = kernel.run("%%gpu h100\nstate['n'] += 1")
            assert hop.status == "ok", hop.error_text
        assert wipe(stack.cache) > 0
        hop = kernel.run("%%gpu h100\nstate['n'] += 1\nprint(len(state['a']))")
        assert hop.status == "ok", hop.error_text
        assert kernel.value("state['n']") == "4"
        assert kernel.value("len(state['a'])") == str(1 << 20)
    finally:
        kernel.shutdown()


def test_the_runtime_cache_wiped_while_a_cell_runs(stack: FaultStack) -> None:
    kernel = Kernel(stack.env())
    try:
        assert kernel.run("import os\nstate = {'a': os.urandom(1 << 20), 'n': 1}").status == "ok"
        assert kernel.run("%%gpu h100\nstate['n'] += 1").status == "ok"
        wiped = []
        hook = when(printed("cell-is-running"), lambda _: wiped.append(wipe(stack.cache)))
        hop = kernel.run(
            "%%gpu h100\nimport os, time\nprint('cell-is-running', flush=True)\ntime.sleep(2)\n"
            "state['b'] = os.urandom(1 << 20)\nstate['n'] += 1",
            on_message=hook,
        )
        assert hook.fired and wiped[0] > 0
        if hop.status == "ok":
            assert kernel.value("state['n']") == "3"
        else:
            # The worker's own files went with the cache: the hop fails, says why, and loses nothing.
            assert "unchanged" in hop.error_text, hop.error_text
            assert kernel.value("state['n']") == "2"
        after = kernel.run("%%gpu h100\nstate['n'] += 10")
        assert after.status == "ok", after.error_text
        assert kernel.value("len(state['a'])") == str(1 << 20)
    finally:
        kernel.shutdown()
