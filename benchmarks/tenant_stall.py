"""How long one user waits for a small request while another user sends the worst frames (issue 13, item 7).

Starts a real gateway with two users. Bob asks `find_missing` of one digest, one request at a time, and the latency of
each is measured: first alone (the baseline, in the same run), then while Ann's threads send, back to back, zstd bombs
(put_blobs frames of a few KiB that decode into 48 MiB each) and find_missing of 10,000 digests (the most a request
may name), and, once, one of 500,000 digests (refused unparsed).

    .venv/bin/python benchmarks/tenant_stall.py [--seconds 10] [--flood bomb,bomb,find,find]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import secrets
import statistics
import struct
import tempfile
import time
from pathlib import Path

import zstandard
from websockets.sync.client import connect

from kernelhop.cli.services import start_gateway
from kernelhop.client.gateway import GatewayConnection

BOMB_BYTES = 48 * 1024 * 1024


def binary(header: dict, payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + payload


def bob_latencies(url: str, token: str, seconds: float) -> list[float]:
    out = []
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            i += 1
            t0 = time.perf_counter()
            ws.send(json.dumps({"id": i, "op": "find_missing", "digests": [f"{'a' * 64}/{i}"]}))
            reply = json.loads(ws.recv())
            out.append(time.perf_counter() - t0)
            assert reply["re"] == i and reply["ok"], reply
    return out


def flood(url: str, token: str, stop, kind: str, sent) -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(BOMB_BYTES))
    many = json.dumps(
        {"id": "many", "op": "find_missing", "digests": [f"{i:064x}/1" for i in range(10_000)]}
    ).encode()
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
        if kind == "find":
            huge = {"id": "huge", "op": "find_missing", "digests": [f"{i:064x}/1" for i in range(500_000)]}
            ws.send(json.dumps(huge))
            ws.recv()
        n = 0
        while not stop.is_set():
            n += 1
            if kind == "bomb":
                entry = {"digest": f"{n:064x}/{BOMB_BYTES}", "offset": 0, "length": len(bomb), "codec": "zstd"}
                ws.send(binary({"id": n, "op": "put_blobs", "blobs": [entry]}, bomb))
            else:
                ws.send(many.decode())
            ws.recv()
            with sent.get_lock():
                sent.value += 1


def summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[int(len(ms) * 0.95)]
    return f"{name}: n={len(ms)} p50={statistics.median(ms):.2f} ms p95={p95:.2f} ms max={ms[-1]:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--flood", default="bomb,bomb,find,find", help="Ann's senders: bomb and find, comma-separated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        token = secrets.token_hex(16)
        gateway = start_gateway(data=Path(tmp) / "gateway", token=token, port=0, grpc_port=0, echo=None)
        try:
            url = gateway.ready["ws"]
            admin = GatewayConnection(url, token, source="benchmark")
            users = {name: admin._op("user_add", name=name)[0]["token"] for name in ("ann", "bob")}
            admin.close()
            alone = bob_latencies(url, users["bob"], args.seconds)
            # Ann's senders are processes of their own, so Bob's timings do not include waiting for their GIL.
            stop = multiprocessing.Event()
            counts = {"bomb": multiprocessing.Value("i", 0), "find": multiprocessing.Value("i", 0)}
            senders = [
                multiprocessing.Process(target=flood, args=(url, users["ann"], stop, kind, counts[kind]), daemon=True)
                for kind in args.flood.split(",")
            ]
            for p in senders:
                p.start()
            time.sleep(2)  # Ann's frames are in flight before Bob starts
            flooded = bob_latencies(url, users["bob"], args.seconds)
            stop.set()
            for p in senders:
                p.join(30)
        finally:
            gateway.stop()
    print(summary("bob alone", alone))
    print(summary("bob while ann floods", flooded))
    print(f"ann's requests answered meanwhile: {counts['bomb'].value} bomb frames, {counts['find'].value} 10k-digest finds")
    print(
        f"ratio p50 {statistics.median(flooded) / statistics.median(alone):.1f}x, "
        f"max {max(flooded) / statistics.median(alone):.1f}x the alone p50"
    )


if __name__ == "__main__":
    main()
