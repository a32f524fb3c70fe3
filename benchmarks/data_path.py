"""The two legs of a cold hop's bytes on one host, each against the way it went before, in the same run.

1. The kernel's upload: ``put_blobs`` of random 256 KiB chunks through the kernel's client, over the gateway's
   upload endpoint (an HTTP POST body per request) and, as the baseline, as WebSocket frames; alternated, fresh
   chunks each time, the median of each.
   Next to it, the floor under any durable store on this disk: the same bytes written and fsynced, as one file and
   as a file per chunk (as the gateway's directory store writes them).
2. The runtime's fetch into an empty cache (``runtime_fetch_s`` of a cold hop whose cell reads an array of the same
   size): a runtime beside the gateway copying the store's files (direct reads) and, as the baseline, a runtime in a
   mount namespace where the store is hidden, reading through ``BatchReadBlobs`` over gRPC (needs root and unshare).
   Each round starts a new runtime with a new cache, so every hop restores cold.

Real gateway and runtime processes on loopback, a real ipykernel as the kernel.

    .venv/bin/python benchmarks/data_path.py [--mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kernelhop_snapshot import digest_of
from kernelhop_testing import CAN_HIDE, Kernel, hiding, launch_stack

from kernelhop.cli.services import runtime_token, start_gateway, start_runtime
from kernelhop.client.gateway import GatewayConnection

CHUNK = 256 * 1024
TIMINGS = "get_ipython().magics_manager.registry['GpuMagics'].hopper.last_timings"


def uploads(mib: int, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"endpoint": [], "frames": []}
    with tempfile.TemporaryDirectory() as tmp:
        token = secrets.token_hex(16)
        gateway = start_gateway(data=Path(tmp) / "gateway", token=token, port=0, grpc_port=0, echo=None)
        try:
            for _ in range(rounds):
                for way in times:
                    blobs = {}
                    for _ in range(mib * 1024 * 1024 // CHUNK):
                        data = os.urandom(CHUNK)
                        blobs[str(digest_of(data))] = data
                    client = GatewayConnection(gateway.ready["ws"], token)
                    client.compress = False
                    client._conn()
                    client._uploads_off = way == "frames"
                    start = time.perf_counter()
                    client.put_blobs(blobs)
                    times[way].append(time.perf_counter() - start)
                    client.close()
        finally:
            gateway.stop()
    return times


def durable_writes(mib: int, rounds: int) -> dict[str, list[float]]:
    """The floor under any durable store on this disk: the same bytes written and fsynced, as one file, and as one
    file per chunk fsynced from a pool (the gateway's directory store writes a file per chunk, fsyncs in parallel)."""
    times: dict[str, list[float]] = {"one file": [], "a file per chunk": []}
    data = [os.urandom(CHUNK) for _ in range(mib * 1024 * 1024 // CHUNK)]

    def one(path: Path, chunks: list[bytes]) -> None:
        with open(path, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())

    with tempfile.TemporaryDirectory(dir=os.environ.get("KERNELHOP_HOME")) as tmp, ThreadPoolExecutor(8) as pool:
        for r in range(rounds):
            start = time.perf_counter()
            one(Path(tmp) / f"pack-{r}", data)
            times["one file"].append(time.perf_counter() - start)
            start = time.perf_counter()
            list(pool.map(lambda i: one(Path(tmp) / f"{r}-{i}", [data[i]]), range(len(data))))
            times["a file per chunk"].append(time.perf_counter() - start)
    return times


def fetches(mib: int, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"direct": [], **({"grpc": []} if CAN_HIDE else {})}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stack = launch_stack(root, capacity=1, echo=open(os.devnull, "w"))
        kernel = Kernel(stack.env())
        try:
            setup = kernel.run(f"import numpy as np\nbig = np.random.default_rng(0).random({mib * 1024 * 1024 // 8})")
            assert setup.status == "ok", setup.error_text
            n = 0
            for _ in range(rounds):
                for way in times:
                    stack.runtime.stop()
                    n += 1
                    stack.runtime = start_runtime(
                        gateway=stack.gateway.ready["grpc"],
                        token=runtime_token(root / "runtime-token"),
                        classes=["h100"],
                        capacity=1,
                        cache=root / f"cache-{n}",
                        echo=None,
                        prefix=hiding(root / "gateway" / "cas") if way == "grpc" else None,
                    )
                    hop = kernel.run("%%gpu h100 --quiet\ntotal = float(big.sum())")
                    assert hop.status == "ok", hop.error_text
                    fetched = float(kernel.value(f"{TIMINGS}['runtime_fetch_bytes']"))
                    assert fetched >= mib * 1024 * 1024, f"the hop fetched {fetched:.0f} bytes: not a cold cache"
                    times[way].append(float(kernel.value(f"{TIMINGS}['runtime_fetch_s']")))
                    shutil.rmtree(root / f"cache-{n}", ignore_errors=True)
        finally:
            kernel.shutdown()
            stack.stop()
    return times


def report(title: str, times: dict[str, list[float]], mib: int) -> None:
    """The last way is the baseline the others are measured against."""
    (way, base), *others = [(k, statistics.median(v)) for k, v in reversed(times.items())]
    print(f"{title}, {mib} MiB, median of {len(times[way])}:")
    label = "baseline, " if others else ""
    print(f"  {label}{way}: {base:.3f} s ({mib / base:.0f} MiB/s); each: {', '.join(f'{t:.2f}' for t in times[way])}")
    for k, s in others:
        each = ", ".join(f"{t:.2f}" for t in times[k])
        print(f"  {k}: {s:.3f} s ({mib / s:.0f} MiB/s), {base / s:.2f}x faster; each: {each}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    report("1. the kernel's upload", uploads(args.mib, args.rounds), args.mib)
    report("   the floor under a durable store: the same bytes written and fsynced", durable_writes(args.mib, args.rounds), args.mib)
    got = fetches(args.mib, args.rounds)
    report("2. the runtime's fetch into an empty cache", got, args.mib)
    if "grpc" not in got:
        print("  (no baseline: hiding the store from a runtime needs root and unshare)")


if __name__ == "__main__":
    main()
