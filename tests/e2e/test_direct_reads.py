"""A runtime beside the gateway reads its runs' chunks from the gateway's directory store itself: copies into its
cache, no bytes through gRPC. A runtime that cannot see that disk (another host) reads through the gateway.

Real ipykernel → gateway → runtime (posing as h100) → worker, on loopback. "Another host" is a runtime in a mount
namespace of its own where the gateway's store is an empty tmpfs: the file: URLs name files it cannot find.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from kernelhop.cli.services import runtime_token, start_runtime
from kernelhop_testing import CAN_HIDE, Kernel, Stack, bytes_moved, hiding, launch_stack, stored_blobs

CELL = "%%gpu h100 --quiet\ntotal = float(big.sum())"
BLOB_NAME = re.compile(r"^[0-9a-f]{64}$")


def cached_blobs(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if BLOB_NAME.match(p.name) and "given" not in p.parts]


def served_over_grpc(stack: Stack) -> float:
    return bytes_moved(stack.ws_url, stack.token, "grpc", "out")


def hop_big_array(stack: Stack, cwd: Path) -> None:
    # More small files than one GetBlobUrls call may name (1024): the working directory travels with the hop.
    cwd.mkdir(exist_ok=True)
    for i in range(1500):
        (cwd / f"note-{i}.txt").write_text(f"file {i}\n")
    kernel = Kernel(stack.env(), cwd=cwd)
    try:
        setup = kernel.run("import numpy as np\nbig = np.arange(2_000_000, dtype=np.float64)\nexpected = float(big.sum())")
        assert setup.status == "ok", setup.error_text
        hop = kernel.run(CELL)
        assert hop.status == "ok", hop.error_text
        assert kernel.value("total == expected") == "True"
    finally:
        kernel.shutdown()


def test_a_runtime_beside_the_gateway_copies_the_stores_files(tmp_path: Path) -> None:
    stack = launch_stack(tmp_path)
    try:
        hop_big_array(stack, tmp_path / "work")
        store = stored_blobs(tmp_path / "gateway" / "cas")
        cached = cached_blobs(tmp_path / "runtime-cache")
        # The 16 MB array's chunks and the files', each a copy of its bytes in the store's packs, none of them sent
        # over gRPC.
        assert len(cached) >= 1500
        assert all(p.read_bytes() == store[p.name].read() for p in cached)
        assert not any(os.path.samefile(p, store[p.name].file) for p in cached)
        assert served_over_grpc(stack) == 0
        assert not any("reading through the gateway" in line for line in stack.runtime.lines)
    finally:
        stack.stop()


@pytest.mark.skipif(not CAN_HIDE, reason="a mount namespace needs root and unshare")
def test_a_runtime_that_cannot_see_the_store_reads_through_the_gateway(tmp_path: Path) -> None:
    stack = launch_stack(tmp_path)
    stack.runtime.stop()
    cache = tmp_path / "elsewhere-cache"
    stack.runtime = start_runtime(
        gateway=stack.gateway.ready["grpc"],
        token=runtime_token(tmp_path / "runtime-token"),
        classes=["h100"],
        capacity=1,
        cache=cache,
        prefix=hiding(tmp_path / "gateway" / "cas"),
    )
    try:
        hop_big_array(stack, tmp_path / "work")
        assert any("reading through the gateway from now on" in line for line in stack.runtime.lines), stack.runtime.lines
        assert len(cached_blobs(cache)) >= 16
        assert served_over_grpc(stack) >= 16_000_000
    finally:
        stack.stop()
