"""Fork and diff of snapshots: metadata operations, so their cost must not grow with the state.

Starts a real gateway on loopback and acts as one user through the same client code `%snapshot` uses. For a 1 MiB
and a 1 GiB state it times `fork` (sign a record over the same manifest and save it: what `%snapshot fork` does
before it starts a kernel), next to the baseline of saving the same state again (capture, ask which chunks are
missing, save). Then it times `diff` of two 1 GiB snapshots that differ in one variable, from a cold local store
(both manifests fetched and verified each time), next to the baseline of capturing the 1 GiB namespace once.

    .venv/bin/python benchmarks/fork_diff.py [--runs 30] [--big-mib 1024]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from kernelhop_snapshot import Capturer

from kernelhop.cli.services import start_gateway
from kernelhop.client.gateway import GatewayConnection
from kernelhop.client.hop_store import HopStore
from kernelhop.client.snapshots import Snapshots, diff_manifests
from kernelhop.environment import record_environment
from kernelhop.signing import Keyring

MiB = 1024 * 1024
VARIABLES = 8


def state(total_bytes: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    per = max(total_bytes // VARIABLES // 8, 1)
    return {f"v{i}": rng.random(per) for i in range(VARIABLES)}


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1e3


def save(api: Snapshots, capturer: Capturer, ns: dict[str, Any]) -> str:
    capturer.store = api.store
    cap = capturer.capture(ns)
    return api.save(
        cap.manifest, cap.digest, parents=[], message="bench", notebook=None, cells=[], environment=record_environment()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--big-mib", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        admin_token = secrets.token_hex(16)
        gw = start_gateway(data=root / "gw", token=admin_token, port=0, grpc_port=0, echo=None)
        try:
            url = gw.ready["ws"]
            admin = Snapshots(GatewayConnection(url, admin_token), HopStore())
            token = admin.request("user_add", name="bench")["token"]
            client = GatewayConnection(url, token)
            keyring = Keyring(root / "home")
            rows = []
            big_ns: dict[str, Any] = {}
            big_id = ""
            for label, size in (("1 MiB", MiB), (f"{args.big_mib} MiB", args.big_mib * MiB)):
                ns = state(size, 0)
                api = Snapshots(client, HopStore(), keyring)
                capturer = Capturer(api.store)
                t = time.perf_counter()
                sid = save(api, capturer, ns)
                first_save = time.perf_counter() - t
                opened = api.open(sid)
                fork = timed(lambda api=api, opened=opened: api.fork(opened), args.runs)
                resave = timed(lambda ns=ns: save(Snapshots(client, HopStore(), keyring), Capturer(HopStore()), ns), 3)
                rows.append((label, first_save, fork, resave))
                if size > MiB:
                    big_ns, big_id = ns, sid
            # Two big snapshots that differ in one variable.
            changed = dict(big_ns)
            changed["v3"] = np.random.default_rng(1).random(big_ns["v3"].size)
            api = Snapshots(client, HopStore(), keyring)
            other_id = save(api, Capturer(api.store), changed)

            def diff_cold() -> None:
                cold = Snapshots(client, HopStore(), keyring)
                _, a = cold.manifest_of(big_id)
                _, b = cold.manifest_of(other_id)
                changes = diff_manifests(a, b)
                assert [c.name for c in changes] == ["v3"], changes

            diff = timed(diff_cold, args.runs)
            capture_once = timed(lambda: Capturer(HopStore()).capture(big_ns), 3)
        finally:
            gw.stop()

    print(f"fork = sign + save a record over the same manifest; {args.runs} runs; baseline: save the state again")
    print(f"{'state':>10} {'fork p50':>10} {'fork p95':>10} {'re-save p50':>12} {'first save s':>13}")
    for label, first_save, fork, resave in rows:
        print(f"{label:>10} {p(fork, 50):8.2f}ms {p(fork, 95):8.2f}ms {p(resave, 50):10.1f}ms {first_save:13.2f}")
    ratio = p(rows[1][2], 50) / p(rows[0][2], 50)
    print(f"fork p50 big/small: {ratio:.2f}x")
    print(
        f"diff of two {args.big_mib} MiB snapshots differing in one variable (cold store, manifests fetched and "
        f"verified): p50 {p(diff, 50):.2f} ms, p95 {p(diff, 95):.2f} ms; baseline capture of the namespace: "
        f"p50 {p(capture_once, 50):.0f} ms"
    )


if __name__ == "__main__":
    main()
