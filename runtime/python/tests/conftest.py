"""Drive `python -m kernelhop_worker` through its pipes, as the runtime does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from worker_harness import WorkerUnderTest


@pytest.fixture
def cache(tmp_path) -> str:
    path = tmp_path / "cache"
    path.mkdir()
    return str(path)


@pytest.fixture
def worker(cache) -> Iterator[WorkerUnderTest]:
    w = WorkerUnderTest(cache)
    yield w
    w.close()


@pytest.fixture
def snapshot_of(cache):
    """Capture a namespace built by `setup` into the worker's cache; returns the manifest digest text."""
    from kernelhop_snapshot import Capturer, DirectoryBlobStore

    def make(setup: str = "") -> str:
        ns: dict[str, Any] = {}
        exec(setup, ns)
        ns.pop("__builtins__", None)
        return str(Capturer(DirectoryBlobStore(cache)).capture(ns).digest)

    return make
