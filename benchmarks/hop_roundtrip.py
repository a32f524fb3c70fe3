"""Round trip of a trivial `%%gpu` cell with a small state, next to the same cell run locally.

Starts a real gateway and runtime (posing as h100) on loopback and a real ipykernel; times each execute request from
send to reply, as a user waiting on the cell sees it.

    .venv/bin/python benchmarks/hop_roundtrip.py [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kernelhop_testing import Kernel, launch_stack

SETUP = "import numpy as np\nx = np.arange(1000)\nconfig = {'lr': 0.1, 'epochs': 3}\nnames = ['a'] * 100"
CELL = "y = x * 2\ny.sum()"


def timed(kernel: Kernel, code: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        execution = kernel.run(code)
        times.append(time.perf_counter() - start)
        if execution.status != "ok":
            raise SystemExit(f"cell failed: {execution.error_text}")
    return times


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = launch_stack(Path(tmp))
        kernel = Kernel(stack.env())
        try:
            kernel.run(SETUP)
            timed(kernel, f"%%gpu h100 --quiet\n{CELL}", 3)  # warm-up: the first hop uploads the state
            remote = timed(kernel, f"%%gpu h100 --quiet\n{CELL}", args.runs)
            local = timed(kernel, CELL, args.runs)
        finally:
            kernel.shutdown()
            stack.stop()
    print(f"trivial cell, small state, {args.runs} runs each")
    print(f"{'':10} {'p50 ms':>8} {'p95 ms':>8}")
    for name, values in (("local", local), ("%%gpu", remote)):
        print(f"{name:10} {percentile(values, 50) * 1e3:8.1f} {percentile(values, 95) * 1e3:8.1f}")
    print(f"ratio %%gpu/local p50: {percentile(remote, 50) / percentile(local, 50):.1f}x")


if __name__ == "__main__":
    main()
