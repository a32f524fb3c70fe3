"""The worker's cold restore in isolation (issue 15): hop_objects.py's state restored by a fresh worker from the
blobs at hand, against dill.load_module of the same variables, each in a process of its own.

The state (snapshot_engine.make_state plus hop_objects.object_state) is captured into a DirectoryBlobStore as a
runtime's cache holds it, then hard-linked into a `given` directory as the runtime hands a run's blobs to its worker.
Nothing is dropped from the page cache (the runtime has just written those files; so has dill). Each restore is a
fresh `python -m kernelhop_worker` driven through its pipes (runtime/python/tests/worker_harness.py) running one
cell with every name in reach; its figure is the worker's own `restore_s`, the one a hop reports as
`runtime_restore_s`. The engine's restore alone (Capturer.restore through the worker's HandedOverStore, tracking
writes) and dill.load_module are timed in fresh processes too, after importing numpy, pandas and torch as the worker
preloads them.

`--old DIR` restores with the engine and worker of another checkout as well (DIR/kernel-snapshot/python and
DIR/runtime/python first on the path), interleaved with this one's; `--profile FILE` writes a cProfile of one
engine restore.

    .venv/bin/python benchmarks/restore_cold.py [--scale 1.0] [--objects 1000000] [--runs 3] [--old DIR]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRELOAD = ("numpy", "pandas", "torch")  # what the worker imports before its first cell (DEFAULT_PRELOAD)


def child_engine(given: str, digest: str, profile: str | None) -> dict[str, float]:
    """One cold engine restore, as the worker makes it (Worker._restore without the shell)."""
    import cProfile

    from kernelhop_snapshot import Capturer, Digest, Manifest, RemoteOnly
    from kernelhop_worker.worker import HandedOverStore

    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as out:
        store = HandedOverStore(given, out)
        started, cpu = time.perf_counter(), time.process_time()
        manifest = Manifest.from_bytes(store.get(Digest.parse(digest)))
        capturer = Capturer(store, track_writes=True)
        if profiler:
            profiler.enable()
        restored = capturer.restore(manifest, groups=manifest.groups, globals={}, keep_unrestorable="kernel")
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    unrestored = [n for n, v in restored.items() if isinstance(v, RemoteOnly)]
    assert not unrestored, f"not restored here: {unrestored}"
    assert capturer.tracker is not None and capturer.tracker.available, capturer.tracker and capturer.tracker.reason
    return {"engine_s": wall, "engine_cpu_s": cpu}


def child_dill(path: str) -> dict[str, float]:
    import dill

    started, cpu = time.perf_counter(), time.process_time()
    dill.load_module(path)
    return {"dill_s": time.perf_counter() - started, "dill_cpu_s": time.process_time() - cpu}


def spawn(args: list[str], path: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def worker_restore(given: str, digest: str, names: list[str], path: list[str]) -> float:
    sys.path.insert(0, str(ROOT / "runtime" / "python" / "tests"))
    from worker_harness import WorkerUnderTest

    env = {"PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")])}
    worker = WorkerUnderTest(given, env)
    try:
        events = worker.run("_ = [" + ", ".join(names) + "]", digest, timeout=600, reach=names)
    finally:
        worker.close()
    final = events[-1]
    if final["event"] != "done" or final["status"] != "ok":
        raise SystemExit(f"the worker's run failed: {final}")
    return float(final["timings"]["restore_s"])


def engine_path(checkout: Path) -> list[str]:
    return [str(checkout / "kernel-snapshot" / "python"), str(checkout / "runtime" / "python")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="arrays etc.: 1.0 is about 1 GiB")
    parser.add_argument("--objects", type=int, default=1_000_000, help="strings in the list and in the column")
    parser.add_argument("--runs", type=int, default=3, help="restores of each kind (p50 reported)")
    parser.add_argument("--old", type=Path, help="a checkout whose engine and worker are measured as well")
    parser.add_argument("--profile", help="write a cProfile of one engine restore (this checkout) here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        for module in PRELOAD:
            importlib.import_module(module)
        if kind == "dill":
            result = child_dill(rest[0])
        else:
            result = child_engine(rest[0], rest[1], rest[2] if len(rest) > 2 else None)
        print(json.dumps(result))
        return

    import dill
    from kernelhop_snapshot import Capturer, DirectoryBlobStore

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hop_objects import object_state
    from snapshot_engine import MiB, as_module, make_state, state_bytes

    state = {**make_state(args.scale), **object_state(args.objects)}
    names = sorted(state)
    print(
        f"state: {state_bytes(state) / MiB:.0f} MiB of buffers in {len(state)} variables, "
        f"{len(state['tokens']) + len(state['texts']) + len(state['records']):,} small Python objects; "
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    engines = {"this checkout": engine_path(ROOT)}
    if args.old:
        engines = {f"old ({args.old})": engine_path(args.old.resolve()), **engines}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        digest = str(Capturer(DirectoryBlobStore(cache, durable=False)).capture(state).digest)
        given = root / "given"
        for blob in cache.glob("*/*"):
            (given / blob.parent.name).mkdir(parents=True, exist_ok=True)
            os.link(blob, given / blob.parent.name / blob.name)
        dill_file = root / "session.pkl"
        dill.dump_module(str(dill_file), module=as_module(state))
        del state
        gc.collect()
        blobs = sum(1 for _ in given.glob("*/*"))
        print(f"{blobs} blobs in the given directory; page cache left as it is (all of them were just written)")

        kinds = ("worker_s", "engine_s", "engine_cpu_s")
        results: dict[str, dict[str, list[float]]] = {e: {k: [] for k in kinds} for e in engines}
        dills: dict[str, list[float]] = {"dill_s": [], "dill_cpu_s": []}
        for _ in range(args.runs):
            for k, v in spawn(["dill", str(dill_file)], []).items():
                dills[k].append(v)
            for engine, path in engines.items():
                results[engine]["worker_s"].append(worker_restore(str(given), digest, names, path))
                for k, v in spawn(["engine", str(given), digest], path).items():
                    results[engine][k].append(v)
        if args.profile:
            spawn(["engine", str(given), digest, args.profile], engines["this checkout"])

    def row(engine: str, label: str, series: list[float], base: float) -> None:
        p50 = statistics.median(series)
        each = " ".join(f"{t:.3f}" for t in series)
        print(f"{engine:30} {label:38} {p50:7.3f} {p50 / base:6.2f}x {min(series):7.3f}  {each}")

    base, base_cpu = statistics.median(dills["dill_s"]), statistics.median(dills["dill_cpu_s"])
    # The minimum too: on a shared machine it is the run least disturbed by the others' load.
    print(f"{'':30} {'measure, p50 of ' + str(args.runs):38} {'s':>7} {'/ dill':>7} {'min s':>7}  each")
    row("dill", "dill.load_module (wall)", dills["dill_s"], base)
    row("dill", "dill.load_module (CPU, all threads)", dills["dill_cpu_s"], base_cpu)
    for engine, series in results.items():
        row(engine, "worker restore_s (fresh worker, wall)", series["worker_s"], base)
        row(engine, "Capturer.restore alone (wall)", series["engine_s"], base)
        row(engine, "Capturer.restore alone (CPU)", series["engine_cpu_s"], base_cpu)


if __name__ == "__main__":
    main()
