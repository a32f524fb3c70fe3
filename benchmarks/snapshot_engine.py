"""The snapshot engine against dill on one state of about 1 GiB: first checkpoint, a checkpoint after changing 1 MiB,
and a restore, each printed as a ratio to its baseline run here in the same run.

State: numpy arrays, a pandas DataFrame, a torch model, 10,000 small Python objects (scaled by --scale).

    .venv/bin/python benchmarks/snapshot_engine.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import dill
import numpy as np
import pandas as pd
import torch
from kernelhop_snapshot import Capturer, DirectoryBlobStore, Manifest

from kernelhop.client.hop_store import HopStore

MiB = 1 << 20


def make_state(scale: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = int(256 * MiB * scale) // 8
    state: dict[str, Any] = {
        "embeddings": rng.standard_normal(n).reshape(-1, 512),
        "weights": rng.standard_normal(n),
        "counts": rng.integers(0, 1000, size=n, dtype=np.int64),
        "mask": rng.random(n) > 0.5,
        "labels": rng.integers(0, 10, size=n // 2, dtype=np.int32),
    }
    rows = int(2_000_000 * scale)
    state["frame"] = pd.DataFrame(
        {"a": rng.random(rows), "b": rng.integers(0, 100, rows), "c": rng.random(rows).astype(np.float32)}
    )
    width = max(64, int(2048 * scale**0.5))
    state["model"] = torch.nn.Sequential(
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.Linear(width, 10)
    )
    state["records"] = [
        {"id": i, "name": f"item-{i}", "tags": ["x", str(i % 7)], "score": i * 0.5} for i in range(10_000)
    ]
    return state


def state_bytes(state: dict[str, Any]) -> int:
    total = 0
    for value in state.values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, pd.DataFrame):
            total += int(value.memory_usage(deep=False).sum())
        elif isinstance(value, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in value.parameters())
    return total


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def as_module(state: dict[str, Any]) -> types.ModuleType:
    module = types.ModuleType("__main__")
    module.__dict__.update(state)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 is about 1 GiB")
    args = parser.parse_args()
    state = make_state(args.scale)
    size = state_bytes(state)
    print(f"state: {size / MiB:.0f} MiB in {len(state)} variables, machine: {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dill_file = root / "session.pkl"
        t_dill_dump, _ = timed(lambda: dill.dump_module(str(dill_file), module=as_module(state)))
        t_dill_load, _ = timed(lambda: dill.load_module(str(dill_file)))
        dill_file.unlink()

        # What a hop does first: capture into memory (chunks are views of the objects, nothing copied or written).
        t_hop_capture, _ = timed(lambda: Capturer(HopStore()).capture(state))

        store = DirectoryBlobStore(root / "cas")
        capturer = Capturer(store)
        t_first, first = timed(lambda: capturer.capture(state))

        # Change 1 MiB in the middle of the largest array, then checkpoint again with the same capturer.
        weights = state["weights"]
        middle = weights.size // 2
        weights[middle : middle + MiB // 8] += 1.0
        t_second, second = timed(lambda: capturer.capture(state, parent=first.digest))
        moved = sum(d.size for d in second.new_blobs)

        # Cold restore: a new capturer, blobs read from the directory store, as a fresh worker with the chunks at hand.
        manifest = Manifest.from_bytes(store.get(second.digest))
        t_restore, restored = timed(lambda: Capturer(DirectoryBlobStore(root / "cas")).restore(manifest))
        assert np.array_equal(restored["weights"], weights)

    rows = [
        ("first checkpoint (to disk)", t_first, "dill.dump_module", t_dill_dump),
        ("first capture (hop, in memory)", t_hop_capture, "dill.dump_module", t_dill_dump),
        ("checkpoint after 1 MiB change", t_second, "first checkpoint (to disk)", t_first),
        ("restore (local chunks)", t_restore, "dill.load_module", t_dill_load),
    ]
    print(f"{'measure':32} {'kernelhop s':>12} {'baseline':>26} {'baseline s':>11} {'speed-up':>9}")
    for name, ours, base_name, base in rows:
        print(f"{name:32} {ours:12.3f} {base_name:>26} {base:11.3f} {base / ours:8.1f}x")
    print(f"bytes moved by the second checkpoint: {moved / MiB:.2f} MiB (1 MiB changed)")


if __name__ == "__main__":
    main()
