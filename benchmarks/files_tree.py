"""A hop carrying a 200 MiB working directory of 2,000 files: the first hop, and the next after one file changed,
next to the same trivial cell without files and to rsync copying the same tree, in the same run.

Starts a real gateway and runtime (posing as h100) on loopback and a real ipykernel whose working directory is the
tree; times each execute request from send to reply. Bytes moved: what the gateway's store grew by (the kernel's
upload) and what the runtime fetched into its cache (its `fetch_bytes`).

    .venv/bin/python benchmarks/files_tree.py [--files 2000] [--file-kib 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from kernelhop_testing import Kernel, launch_stack

CELL = "%%gpu h100 --quiet{flags}\nimport os\nfound = os.path.exists('d00/f0000.bin')"


def make_tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        d = root / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.bin").write_bytes(os.urandom(size))
    # Older than the scanner's 2 s "racily clean" window, as a notebook's data is.
    past = time.time() - 60
    for p in root.rglob("*.bin"):
        os.utime(p, (past, past))


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def hop(kernel: Kernel, flags: str = "") -> tuple[float, dict]:
    start = time.perf_counter()
    execution = kernel.run(CELL.format(flags=flags), timeout=600)
    took = time.perf_counter() - start
    if execution.status != "ok":
        raise SystemExit(f"cell failed: {execution.error_text}{execution.stream_text('stderr')}")
    timings = kernel.value("json.dumps(get_ipython().magics_manager.registry['GpuMagics'].hopper.last_timings)")
    return took, json.loads(eval(timings))


def rsync(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["rsync", "-a", "--delete", f"{src}/", f"{dst}/"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kib", type=int, default=100)
    args = parser.parse_args()
    size = args.file_kib * 1024
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tree = root / "notebook"
        make_tree(tree, args.files, size)
        stack = launch_stack(root / "stack")
        kernel = Kernel(stack.env(), cwd=tree)
        gateway_store = root / "stack" / "gateway"
        try:
            kernel.run("import json")
            hop(kernel, " --no-files")  # the worker and the state, warm
            bare = min(hop(kernel, " --no-files")[0] for _ in range(3))
            before = store_bytes(gateway_store)
            first, t1 = hop(kernel)
            up1 = store_bytes(gateway_store) - before
            again, _ = hop(kernel)
            (tree / "d07" / "f0007.bin").write_bytes(os.urandom(size))
            before = store_bytes(gateway_store)
            changed, t2 = hop(kernel)
            up2 = store_bytes(gateway_store) - before
        finally:
            kernel.shutdown()
            stack.stop()
        if shutil.which("rsync"):
            copy = root / "copy"
            r1 = rsync(tree, copy)
            (tree / "d08" / "f0008.bin").write_bytes(os.urandom(size))
            r2 = rsync(tree, copy)
        else:
            r1 = r2 = None
    mib = 1024 * 1024
    total = args.files * size
    print(f"working directory: {args.files} files, {total / mib:.0f} MiB; trivial cell")
    print(f"{'':34} {'s':>7} {'uploaded MiB':>13} {'fetched MiB':>12}")
    print(f"{'hop, --no-files (warm)':34} {bare:7.3f}")
    print(f"{'hop with files, first':34} {first:7.3f} {up1 / mib:13.1f} {t1.get('runtime_fetch_bytes', 0) / mib:12.1f}")
    print(f"{'hop with files, nothing changed':34} {again:7.3f}")
    fetched2 = t2.get("runtime_fetch_bytes", 0) / mib
    print(f"{'hop with files, one file changed':34} {changed:7.3f} {up2 / mib:13.2f} {fetched2:12.2f}")
    if r1 is None:
        print("rsync: not installed here (apt-get install rsync); no baseline")
        return
    print(f"{'rsync -a, first copy':34} {r1:7.3f}")
    print(f"{'rsync -a, one file changed':34} {r2:7.3f}")
    print(f"ratio first hop - bare / rsync first: {(first - bare) / r1:.2f}x")
    print(f"ratio changed hop - bare / rsync changed: {(changed - bare) / r2:.2f}x")


if __name__ == "__main__":
    main()
