"""A runtime's cold fetch of blobs from a gateway over gRPC on loopback, next to reading the same blob files from
the gateway's own directory (the page cache: what a local restore like dill's reads at).

Starts a real gateway, uploads random 256 KiB chunks through the kernel's client, then runs benchmarks/blob_fetch.js
(the runtime's own GatewayClient and ChunkCache): the transport alone (nothing verified or written) and the fetch into
a cache, three times each; the baseline runs here in the same run.

    .venv/bin/python benchmarks/blob_fetch.py [--mib 256]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from kernelhop_snapshot import digest_of

from kernelhop.cli.services import project_root, start_gateway
from kernelhop.client.gateway import GatewayConnection

CHUNK = 256 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="how much to fetch, in 256 KiB chunks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        token = secrets.token_hex(16)
        gateway = start_gateway(data=root / "gateway", token=token, port=0, grpc_port=0)
        try:
            blobs = {}
            for _ in range(args.mib * 1024 * 1024 // CHUNK):
                data = os.urandom(CHUNK)
                blobs[str(digest_of(data))] = data
            GatewayConnection(gateway.ready["ws"], token).put_blobs(blobs)
            listing = root / "digests"
            listing.write_text("\n".join(blobs))
            script = project_root() / "benchmarks" / "blob_fetch.js"
            run = subprocess.run(
                ["node", str(script), gateway.ready["grpc"], token, str(listing)],
                check=True,
                capture_output=True,
                text=True,
            )
            fetched = json.loads(run.stdout)
            local = []
            for _ in range(3):
                start = time.perf_counter()
                for text in blobs:
                    h = text.split("/")[0]
                    (root / "gateway" / "cas" / h[:2] / h).read_bytes()
                local.append(time.perf_counter() - start)
        finally:
            gateway.stop()
    mib = args.mib
    base = statistics.median(local)
    print(f"{mib} MiB in {len(blobs)} chunks of 256 KiB, machine: {os.cpu_count()} cores")
    print(f"baseline: read the blob files from the gateway's directory here: {base:.3f} s ({mib / base:.0f} MiB/s)")
    steps = (("transport_s", "gRPC BatchReadBlobs, no verify, no write"), ("fetch_s", "fetch into a runtime cache"))
    for key, label in steps:
        s = statistics.median(fetched[key])
        print(f"{label}: {s:.3f} s ({mib / s:.0f} MiB/s), {s / base:.1f}x the baseline's time")


if __name__ == "__main__":
    main()
