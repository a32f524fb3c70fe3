"""What carrying module state (kernelhop_snapshot/module_state.py) adds to one hop, next to the capture of
hop_roundtrip.py's small state by a warm Capturer, measured here in the same run.

Both sides run in this process: the kernel's read and encode (`outgoing`), the worker's reset and apply
(`before_cell`), its read of what the cell changed (`after_cell`, here a cell that drew one random number), and the
kernel's decode and apply (`incoming`). First with only what every kernel has imported (random, numpy: kernelhop
imports it, warnings, os), then with pandas, torch and matplotlib imported too.

    .venv/bin/python benchmarks/module_state.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import numpy as np
from kernelhop_snapshot import Capturer, MemoryBlobStore
from kernelhop_snapshot.module_state import KernelModuleState, WorkerModuleState


def per_hop_us(runs: int, step) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def module_state_hop() -> tuple[callable, int]:
    kernel, worker = KernelModuleState(), WorkerModuleState()

    def step() -> None:
        meta = kernel.outgoing()
        worker.before_cell(meta)
        random.random()  # the cell
        kernel.incoming(worker.after_cell())()

    meta = kernel.outgoing()
    return step, len(str(meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()

    namespace = {"x": np.arange(1000), "config": {"lr": 0.1, "epochs": 3}, "names": ["a"] * 100}
    capturer = Capturer(MemoryBlobStore())
    capturer.capture(namespace)
    capture_us = per_hop_us(args.runs, lambda: capturer.capture(namespace))
    print(f"baseline: capture of hop_roundtrip's small state, warm Capturer: {capture_us:8.1f} us")

    step, size = module_state_hop()
    plain = per_hop_us(args.runs, step)
    print(
        f"module state, no pandas/torch/matplotlib:  {plain:8.1f} us  {plain / capture_us:5.2f}x capture, "
        f"{size / 1024:.1f} KiB in the kernel's manifest"
    )

    import matplotlib  # noqa: F401
    import pandas  # noqa: F401
    import torch  # noqa: F401

    step, size = module_state_hop()
    full = per_hop_us(max(1, args.runs // 4), step)
    print(
        f"module state, with pandas/torch/matplotlib: {full:8.1f} us  {full / capture_us:5.2f}x capture, "
        f"{size / 1024:.1f} KiB in the kernel's manifest"
    )
    print(f"python {sys.version.split()[0]}, {args.runs} runs (a quarter with the libraries), medians")


if __name__ == "__main__":
    main()
