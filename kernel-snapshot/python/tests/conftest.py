from __future__ import annotations

import pathlib
from typing import Any

import pytest
from kernelhop_snapshot import DirectoryBlobStore, MemoryBlobStore


@pytest.fixture(params=["memory", "directory"])
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Any:
    if request.param == "memory":
        return MemoryBlobStore()
    return DirectoryBlobStore(tmp_path / "blobs")
