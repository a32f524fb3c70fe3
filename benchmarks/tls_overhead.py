"""What TLS costs the kernel's uplink: the same blobs put to a plain gateway and to one with `--tls auto`, in one run,
on loopback (the ratio is what matters; a real link between hosts is slower than either).

    .venv/bin/python benchmarks/tls_overhead.py [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import tempfile
import time
from pathlib import Path

from kernelhop.client.gateway import GatewayConnection, blob_digest
from kernelhop.cli.services import GATEWAY_READY, node_entry, start_service

FINGERPRINT = re.compile(r"^kernelhop gateway TLS certificate sha256 (?P<fp>\S+)")
BLOB = 4 * 1024 * 1024


def gateway(root: Path, token: str, tls: bool):
    command = node_entry("gateway") + ["--port", "0", "--grpc-port", "0", "--data", str(root)]
    if tls:
        command += ["--tls", "auto"]
    return start_service("gateway", command, GATEWAY_READY, env={**os.environ, "KERNELHOP_TOKEN": token}, echo=None)


def put_seconds(url: str, token: str, mib: int, **trust: str) -> float:
    # Fresh random bytes each round: the gateway keeps what it has and would answer from its dedup otherwise.
    blobs = {}
    for _ in range(mib * 1024 * 1024 // BLOB):
        data = os.urandom(BLOB)
        blobs[blob_digest(data)] = data
    client = GatewayConnection(url, token, **trust)
    client.compress = False  # random bytes: compression would only add CPU to both sides equally
    try:
        client.find_missing(list(blobs)[:1])  # connect (and handshake) outside the timing
        start = time.perf_counter()
        client.put_blobs(blobs)
        return time.perf_counter() - start
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        plain = gateway(Path(tmp) / "plain", token, tls=False)
        secure = gateway(Path(tmp) / "tls", token, tls=True)
        try:
            fingerprint = next(m["fp"] for m in map(FINGERPRINT.match, secure.lines) if m)
            for round_ in range(1, args.rounds + 1):
                ws = put_seconds(plain.ready["ws"], token, args.mib)
                wss = put_seconds(secure.ready["ws"], token, args.mib, fingerprint=fingerprint)
                print(
                    f"round {round_}: {args.mib} MiB put_blobs  ws {ws:.2f} s ({args.mib / ws:.0f} MiB/s)  "
                    f"wss {wss:.2f} s ({args.mib / wss:.0f} MiB/s)  wss/ws {wss / ws:.2f}x",
                    flush=True,
                )
        finally:
            secure.stop()
            plain.stop()


if __name__ == "__main__":
    main()
