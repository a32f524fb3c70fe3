"""Hops with the snapshot_engine state (about 1 GiB) through a real gateway and runtime on loopback: the cold restore
on a fresh worker with an empty cache (lazy, as a `%%gpu` cell gets it, and `--eager`, the whole state), and warm
trivial `%%gpu` cells with the whole state resident on the worker, each next to its baseline run here in the same run
(dill.load_module of the same state from a local file; the same cell run locally); then trivial hops after a cell
`with open(...) as fh: pickle.dump(weights, fh)` left the closed `fh` in the namespace, interleaved with hops without
it (issue 9: each hop once re-ran that block on the runtime, rewriting the file).

The kernel is an in-process IPython shell with kernelhop loaded (as scripts/gpu_check.py); the runtime poses as h100
on this host's CPU.

    .venv/bin/python benchmarks/hop_state.py [--scale 1.0] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dill
from IPython.core.interactiveshell import InteractiveShell
from kernelhop_testing import launch_stack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snapshot_engine import MiB, as_module, make_state, state_bytes, timed  # noqa: E402

CELL = "n_cells = 1"
# A cell that reaches one big variable (`weights`, 256 MiB at scale 1): what a hop costs grows with what it reaches.
BIG_CELL = "w0 = float(weights[0])"
# The cell most notebooks have: it leaves `fh`, a closed file, in the namespace (256 MiB written at scale 1).
WITH_OPEN_CELL = "import pickle\nwith open({path!r}, 'wb') as fh:\n    pickle.dump(weights, fh)"


def hop(shell: InteractiveShell, options: str = "", cell: str = CELL) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    result = shell.run_cell(f"%%gpu h100 --quiet {options}\n{cell}")
    wall = time.perf_counter() - start
    if not result.success:
        raise SystemExit(f"the %%gpu cell failed: {result.error_in_exec or result.error_before_exec!r}")
    return wall, dict(shell.magics_manager.registry["GpuMagics"].hopper.last_timings)


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 is about 1 GiB")
    parser.add_argument("--runs", type=int, default=20, help="warm hops (and local runs) to time")
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds to wait after the cold hops, while the runtime starts the spare worker they took",
    )
    args = parser.parse_args()
    state = make_state(args.scale)
    print(f"state: {state_bytes(state) / MiB:.0f} MiB in {len(state)} variables, machine: {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dill_file = root / "session.pkl"
        dill.dump_module(str(dill_file), module=as_module(state))
        t_dill_load, _ = timed(lambda: dill.load_module(str(dill_file)))
        dill_file.unlink()

        stack = launch_stack(root / "stack", capacity=1)
        try:
            os.environ.update(stack.env())
            shell = InteractiveShell.instance()
            shell.run_line_magic("load_ext", "kernelhop")
            shell.user_ns.update(state)
            hopper = shell.magics_manager.registry["GpuMagics"].hopper
            # Each cold hop in a session of its own: a fresh worker. The lazy one first, so that the eager one
            # too finds the runtime's cache empty (the lazy hop fetched only the few bytes the cell reaches).
            lazy_wall, lazy = hop(shell)
            hopper.session += "-eager"
            cold_wall, cold = hop(shell, "--eager")
            # The warm figures are the steady state: a spare worker importing torch, or the OS writing back the ~2 GB
            # the cold hops left in the gateway's store and the runtime's cache, would share the two cores.
            os.sync()
            time.sleep(args.settle)
            warm = [hop(shell) for _ in range(args.runs)]
            warm_big = [hop(shell, cell=BIG_CELL) for _ in range(args.runs)]
            local = []
            for _ in range(args.runs):
                t, _ = timed(lambda: shell.run_cell(CELL))
                local.append(t)
            dump = root / "weights.pickle"
            t_dump, _ = timed(lambda: shell.run_cell(WITH_OPEN_CELL.format(path=str(dump)), store_history=True))
            written = dump.stat().st_mtime_ns
            closed_file = shell.user_ns["fh"]
            with_fh, without_fh = [], []
            for _ in range(args.runs):
                del shell.user_ns["fh"]
                without_fh.append(hop(shell))
                shell.user_ns["fh"] = closed_file
                with_fh.append(hop(shell))
            rewritten = dump.stat().st_mtime_ns != written
        finally:
            stack.stop()

    walls = [w for w, _ in warm]
    colds = (("lazy: what the cell reaches", lazy_wall, lazy), ("--eager: the whole state", cold_wall, cold))
    for what, wall, t in colds:
        restore = t["runtime_fetch_s"] + t["runtime_restore_s"]
        print(f"cold hop, {what} (trivial cell, fresh worker, empty runtime cache): {wall:.2f} s wall")
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(t.items())))
        print(
            f"  cold restore over loopback (runtime fetch {t['runtime_fetch_s']:.3f} s of "
            f"{t['runtime_fetch_bytes'] / MiB:.1f} MiB + worker restore {t['runtime_restore_s']:.3f} s): "
            f"{restore:.3f} s; dill.load_module from a local file: {t_dill_load:.3f} s; "
            f"speed-up {t_dill_load / restore:.2f}x"
        )
    print(
        f"warm %%gpu hop, trivial cell, whole state resident on the worker, {args.runs} runs: "
        f"p50 {p(walls, 50) * 1e3:.0f} ms, "
        f"p95 {p(walls, 95) * 1e3:.0f} ms; the cell run locally: p50 {p(local, 50) * 1e3:.2f} ms; "
        f"ratio {p(walls, 50) / p(local, 50):.0f}x"
    )
    print("  each, ms: " + " ".join(f"{w * 1e3:.0f}" for w in walls))
    split(warm)
    big_walls = [w for w, _ in warm_big]
    print(
        f"warm %%gpu hop, a cell reading the 256 MiB `weights` ({BIG_CELL!r}), {args.runs} runs: "
        f"p50 {p(big_walls, 50) * 1e3:.0f} ms, p95 {p(big_walls, 95) * 1e3:.0f} ms"
    )
    print("  each, ms: " + " ".join(f"{w * 1e3:.0f}" for w in big_walls))
    split(warm_big)
    after = [w for w, _ in with_fh]
    before = [w for w, _ in without_fh]
    print(
        f"warm %%gpu hop, trivial cell, after a `with open(...) as fh: pickle.dump(weights, fh)` cell "
        f"({t_dump:.2f} s here), {args.runs} runs interleaved: with the closed fh p50 {p(after, 50) * 1e3:.0f} ms, "
        f"p95 {p(after, 95) * 1e3:.0f} ms; without it p50 {p(before, 50) * 1e3:.0f} ms, "
        f"p95 {p(before, 95) * 1e3:.0f} ms; ratio {p(after, 50) / p(before, 50):.2f}; "
        f"the dump file rewritten by a hop: {'YES' if rewritten else 'no'}"
    )
    print("  with fh, each, ms: " + " ".join(f"{w * 1e3:.0f}" for w in after))
    print("  without, each, ms: " + " ".join(f"{w * 1e3:.0f}" for w in before))


def split(hops: list[tuple[float, dict[str, float]]]) -> None:
    parts = ("capture_s", "upload_s", "queue_s", "remote_s", "home_s")
    for _, t in hops:
        # Between the parts: sending the run, and the gateway relaying Done after the runtime's own timings end.
        t["unattributed_s"] = t["total_s"] - sum(t[k] for k in parts)
    keys = sorted({k for _, t in hops for k in t})
    print("  split, p50 s: " + ", ".join(f"{k} {p([t.get(k, 0.0) for _, t in hops], 50):.3f}" for k in keys))


if __name__ == "__main__":
    main()
