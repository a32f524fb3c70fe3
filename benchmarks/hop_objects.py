"""Issue 15's goals in one run, with object-heavy state: the snapshot_engine state (about 1 GiB of arrays, a frame, a
model, 10,000 small dicts) plus a list of N strings and a DataFrame with a column of N strings (N = 1,000,000).

Through a real gateway and runtime on loopback, with an in-process IPython shell with kernelhop loaded as the
kernel, each figure next to its baseline measured in the same run:

1. the cold full-state hop (empty store, cold runtime, a cell that names every variable), end to end in the kernel,
   against dill.dump_module + dill.load_module of the same variables;
2. the durable first checkpoint (`%snapshot save` into the gateway's embedded store) against dill.dump_module to a
   file;
3. warm trivial `%%gpu h100` / `pass` hops with the whole state resident on the worker (goal: p50 < 100 ms), and
   the same hop with the object-heavy part left out (what the objects add);
4. a hop after changing one string in the kernel, and a cell that changes one remotely: the bytes each moves,
   against the size of the changed variable's group and of the state.

    .venv/bin/python benchmarks/hop_objects.py [--scale 1.0] [--objects 1000000] [--runs 11] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dill
import numpy as np
import pandas as pd
from IPython.core.interactiveshell import InteractiveShell

from kernelhop.client.gateway import GatewayConnection
from kernelhop_testing import launch_stack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snapshot_engine import MiB, as_module, make_state, state_bytes, timed  # noqa: E402

OBJECT_NAMES = ("tokens", "texts", "records")


def object_state(n: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    return {
        "tokens": [f"token-{i}" for i in range(n)],
        "texts": pd.DataFrame({"text": [f"row {i} of the text column" for i in range(n)], "score": rng.random(n)}),
    }


class Moved:
    """Bytes the kernel's client puts to and gets from the gateway."""

    def __init__(self) -> None:
        self.put = self.got = 0
        put, get = GatewayConnection.put_blobs, GatewayConnection.get_blobs

        def counting_put(client: GatewayConnection, blobs: Any, *a: Any, **k: Any) -> Any:
            self.put += sum(len(memoryview(b)) for b in blobs.values())
            return put(client, blobs, *a, **k)

        def counting_get(client: GatewayConnection, digests: Any) -> Any:
            out = get(client, digests)
            self.got += sum(len(b) for b in out.values())
            return out

        GatewayConnection.put_blobs = counting_put  # type: ignore[method-assign]
        GatewayConnection.get_blobs = counting_get  # type: ignore[method-assign]

    def reset(self) -> None:
        self.put = self.got = 0


def hop(shell: InteractiveShell, cell: str = "pass", options: str = "") -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    result = shell.run_cell(f"%%gpu h100 --quiet {options}\n{cell}")
    wall = time.perf_counter() - start
    if not result.success:
        raise SystemExit(f"the %%gpu cell failed: {result.error_in_exec or result.error_before_exec!r}")
    return wall, dict(shell.magics_manager.registry["GpuMagics"].hopper.last_timings)


def p50(values: list[float]) -> float:
    return statistics.median(values)


def split(hops: list[tuple[float, dict[str, float]]]) -> str:
    keys = ("capture_s", "upload_s", "queue_s", "remote_s", "home_s", "runtime_restore_s", "runtime_capture_s")
    return ", ".join(f"{k} {p50([t.get(k, 0.0) for _, t in hops]):.3f}" for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="arrays etc.: 1.0 is about 1 GiB")
    parser.add_argument("--objects", type=int, default=1_000_000, help="strings in the list and in the column")
    parser.add_argument("--runs", type=int, default=11, help="warm hops per series")
    parser.add_argument("--quick", action="store_true", help="--scale 0.125 --objects 100000 --runs 5")
    parser.add_argument("--skip-cold", action="store_true", help="leave out the cold hop and the checkpoint")
    args = parser.parse_args()
    if args.quick:
        args.scale, args.objects, args.runs = 0.125, 100_000, 5
    state = {**make_state(args.scale), **object_state(args.objects)}
    small = sum(len(state[n]) for n in ("tokens", "texts")) + 10_000
    print(
        f"state: {state_bytes(state) / MiB:.0f} MiB of buffers in {len(state)} variables, "
        f"{small:,} small Python objects in tokens, texts and records; machine: {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    moved = Moved()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dill_file = root / "session.pkl"
        t_dill_dump, _ = timed(lambda: dill.dump_module(str(dill_file), module=as_module(state)))
        t_dill_load, _ = timed(lambda: dill.load_module(str(dill_file)))
        dill_file.unlink()
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "kernelhop")
        shell.user_ns.update(state)
        hopper = shell.magics_manager.registry["GpuMagics"].hopper
        if not args.skip_cold:
            # The checkpoint into a store of its own: a first checkpoint finds none of its chunks there.
            stack = launch_stack(root / "save", capacity=1)
            try:
                os.environ.update(stack.env())
                t_save, _ = timed(lambda: shell.run_line_magic("snapshot", "save first"))
            finally:
                stack.stop()
            hopper.close()
        stack = launch_stack(root / "stack", capacity=1)
        try:
            os.environ.update(stack.env())
            if not args.skip_cold:
                everything = "_ = [" + ", ".join(sorted(state)) + "]"
                cold_wall, cold = hop(shell, everything)
                hopper.session += "-warm"  # a worker of its own, so the warm series does not start from the cold one
            os.sync()
            time.sleep(5)
            hop(shell)  # the session's first hop restores what it reaches; the series below are warm
            warm = [hop(shell) for _ in range(args.runs)]
            aside = {n: shell.user_ns.pop(n) for n in OBJECT_NAMES}
            hop(shell)
            without = [hop(shell) for _ in range(args.runs)]
            shell.user_ns.update(aside)
            hop(shell)
            local_changes = []
            for i in range(args.runs):
                shell.user_ns["tokens"][1000 + i] = f"changed {i}"
                moved.reset()
                wall, t = hop(shell)
                local_changes.append((wall, t, moved.put))
            remote_changes = []
            for i in range(args.runs):
                moved.reset()
                wall, t = hop(shell, f"tokens[{2000 + i}] = 'changed remotely {i}'")
                remote_changes.append((wall, t, moved.got))
            assert shell.user_ns["tokens"][2000] == "changed remotely 0", "a remote change did not come home"
            tokens_group = sum(
                g.pickle.size for g in hopper.capturer.capture(shell.user_ns).manifest.groups if "tokens" in g.names
            )
        finally:
            stack.stop()

    total = state_bytes(state) + tokens_group
    if not args.skip_cold:
        baseline = t_dill_dump + t_dill_load
        print(
            f"1. cold full-state hop (empty store, cold runtime, a cell naming every variable): {cold_wall:.2f} s; "
            f"dill.dump_module + load_module: {t_dill_dump:.2f} + {t_dill_load:.2f} = {baseline:.2f} s; "
            f"ratio {baseline / cold_wall:.2f}x (goal >= 2.5x)"
        )
        print("   " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(cold.items())))
        print(
            f"2. durable first checkpoint (%snapshot save, embedded store): {t_save:.2f} s; dill.dump_module to a "
            f"file: {t_dill_dump:.2f} s; ratio {t_dill_dump / t_save:.2f}x (goal >= 4x)"
        )
    walls, bare = [w for w, _ in warm], [w for w, _ in without]
    print(
        f"3. warm trivial hop, whole state resident, {args.runs} runs: p50 {p50(walls) * 1e3:.0f} ms "
        f"(goal < 100 ms); without tokens, texts and records: p50 {p50(bare) * 1e3:.0f} ms; "
        f"ratio {p50(walls) / p50(bare):.2f}"
    )
    print("   each, ms: " + " ".join(f"{w * 1e3:.0f}" for w in walls))
    print("   split, p50 s: " + split(warm))
    print("   without them, split, p50 s: " + split(without))
    up = [b for _, _, b in local_changes]
    local_p50 = p50([w for w, _, _ in local_changes])
    print(
        f"4. hop after changing one string of tokens in the kernel: p50 {local_p50 * 1e3:.0f} ms; uploaded p50 "
        f"{p50(up) / MiB:.2f} MiB; the tokens group {tokens_group / MiB:.2f} MiB; the state "
        f"{total / MiB:.0f} MiB (uploaded / state {p50(up) / total:.4f})"
    )
    print("   split, p50 s: " + split([(w, t) for w, t, _ in local_changes]))
    home = [b for _, _, b in remote_changes]
    print(
        f"   a cell changing one string remotely: p50 {p50([w for w, _, _ in remote_changes]) * 1e3:.0f} ms; "
        f"brought home p50 {p50(home) / MiB:.2f} MiB (home / state {p50(home) / total:.4f})"
    )
    print("   split, p50 s: " + split([(w, t) for w, t, _ in remote_changes]))


if __name__ == "__main__":
    main()
