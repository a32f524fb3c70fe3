"""What the worker sandbox costs a warm hop (issue 13): the same cell on a sandboxed runtime (bubblewrap, a uid or
user namespace per worker, blobs handed over as hard links into a read-only bind) and on a `--single-user
--no-sandbox` one, in the same run, alternating so both see the same machine load. Also the first (cold) hop of
a session, which starts its worker's sandbox.

    .venv/bin/python benchmarks/sandbox_cost.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kernelhop_testing import Kernel, launch_stack

SETUP = "import numpy as np\nx = np.random.rand(1 << 17)\nconfig = {'lr': 0.1}\nnames = ['a'] * 100"
CELL = "%%gpu h100\ny = x * 2\nconfig['lr'] *= 0.5\nfloat(y.sum())"


def hop(kernel: Kernel) -> float:
    t0 = time.perf_counter()
    execution = kernel.run(CELL)
    took = time.perf_counter() - t0
    if execution.status != "ok":
        raise SystemExit(f"cell failed: {execution.error_text}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    setups = {"sandboxed": [], "no sandbox": ["--single-user", "--no-sandbox"]}
    with tempfile.TemporaryDirectory(prefix="kernelhop-sandbox-cost-") as root:
        stacks = {name: launch_stack(Path(root) / name.replace(" ", "-"), runtime_extra=extra) for name, extra in setups.items()}
        kernels = {}
        try:
            for name, stack in stacks.items():
                kernels[name] = Kernel(stack.env())
                assert kernels[name].run(SETUP).status == "ok"
            cold = {name: hop(k) for name, k in kernels.items()}
            warm: dict[str, list[float]] = {name: [] for name in kernels}
            for _ in range(args.runs):
                for name, k in kernels.items():
                    warm[name].append(hop(k))
        finally:
            for k in kernels.values():
                k.shutdown()
            for stack in stacks.values():
                stack.stop()
    base = statistics.median(warm["no sandbox"])
    print(f"{args.runs} warm hops each, alternating; cold = the session's first hop (its worker's first run)")
    print(f"{'':12} {'cold s':>8} {'warm median s':>14} {'warm p90 s':>11} {'x no sandbox':>13}")
    for name in setups:
        times = warm[name]
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"{name:12} {cold[name]:8.3f} {statistics.median(times):14.4f} {p90:11.4f} {statistics.median(times) / base:13.2f}")


if __name__ == "__main__":
    main()
