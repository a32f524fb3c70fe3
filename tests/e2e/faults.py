"""The fault tests' harness: a gateway and a runtime that can be killed with SIGKILL and started again on the same
ports and data, hooks that fire on a hop's real progress (the kernel's hop display, the cell's own output), and a
check of the gateway's store that every snapshot and ref names only blobs it holds, intact."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernelhop_snapshot import Digest, Manifest
from kernelhop_snapshot.digest import digest_of
from kernelhop_snapshot.tree import read_tree

from kernelhop.client.gateway import GatewayConnection
from kernelhop.magics.hop_display import MIME_TYPE
from kernelhop.cli.services import Service, runtime_token, start_gateway, start_runtime
from kernelhop_testing import stored_blobs


@dataclass
class FaultStack:
    """A gateway and one runtime under `root`, each one SIGKILLed and started again at will; the gateway keeps its
    ports and data, so kernels and the runtime find it again as they would after a crash."""

    root: Path
    capacity: int = 2
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    gateway: Service | None = None
    runtime: Service | None = None
    ports: tuple[int, int] = (0, 0)

    @property
    def data(self) -> Path:
        return self.root / "gateway"

    @property
    def cache(self) -> Path:
        return self.root / "runtime-cache"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports[0]}/ws/v1"

    def start_gateway(self) -> None:
        self.gateway = start_gateway(
            data=self.data,
            token=self.token,
            port=self.ports[0],
            grpc_port=self.ports[1],
            runtime_token_file=self.root / "runtime-token",
            echo=None,
        )
        ws, grpc = self.gateway.ready["ws"], self.gateway.ready["grpc"]
        self.ports = (int(ws.rsplit(":", 1)[1].split("/", 1)[0]), int(grpc.rsplit(":", 1)[1]))

    def start_runtime(self) -> None:
        self.runtime = start_runtime(
            gateway=f"127.0.0.1:{self.ports[1]}",
            token=runtime_token(self.root / "runtime-token"),
            classes=["h100"],
            capacity=self.capacity,
            cache=self.cache,
            echo=None,
        )

    def start(self) -> FaultStack:
        self.start_gateway()
        self.start_runtime()
        return self

    def kill(self, which: str) -> None:
        """SIGKILL the gateway or the runtime (its sandboxed workers die with it: --die-with-parent)."""
        service = self.gateway if which == "gateway" else self.runtime
        assert service is not None and service.process.poll() is None, f"the {which} is not running"
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(30)

    def restart(self, which: str) -> None:
        if which == "gateway":
            self.start_gateway()
        elif which == "runtime":
            self.start_runtime()
        self.wait_for_runtime()

    def wait_for_runtime(self, timeout: float = 60) -> None:
        """Until the gateway has the runtime registered and no run holds its slots (the runtime re-registers by
        itself after a gateway restart)."""
        deadline = time.monotonic() + timeout
        client = GatewayConnection(self.ws_url, self.token, source="the fault test's admin token")
        try:
            while True:
                try:
                    h100 = client.classes().get("h100", {})
                    if h100.get("runtimes", 0) >= 1 and h100.get("busy", 0) == 0:
                        return
                except Exception:
                    client.close()
                if time.monotonic() > deadline:
                    raise AssertionError(f"the runtime did not register with the gateway again in {timeout:.0f} s")
                time.sleep(0.2)
        finally:
            client.close()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KERNELHOP_GATEWAY": self.ws_url,
            "KERNELHOP_TOKEN": self.token,
            "KERNELHOP_HOME": str(self.root / "home"),
        }

    def stop(self) -> None:
        for service in (self.runtime, self.gateway):
            if service is not None:
                service.stop()


def hop_phase(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The hop display's state in an iopub message, if it is one."""
    if msg.get("msg_type") not in ("display_data", "update_display_data"):
        return None
    state = msg["content"].get("data", {}).get(MIME_TYPE)
    return state if isinstance(state, dict) else None


def when(predicate: Callable[[dict[str, Any]], bool], action: Callable[[dict[str, Any]], None]):
    """An iopub hook that runs `action` once, on the first message `predicate` holds for; `.fired` says if it did."""

    def hook(msg: dict[str, Any]) -> None:
        if not hook.fired and predicate(msg):
            hook.fired = True
            action(msg)

    hook.fired = False
    return hook


def in_phase(phase: str, *, moving: bool = False) -> Callable[[dict[str, Any]], bool]:
    """The hop display says `phase`; with `moving`, bytes of it have moved and more are to come."""

    def holds(msg: dict[str, Any]) -> bool:
        state = hop_phase(msg)
        if state is None or state.get("phase") != phase:
            return False
        return not moving or 0 < state.get("bytes_done", 0) < state.get("bytes_total", 0)

    return holds


def printed(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda msg: msg.get("msg_type") == "stream" and text in msg["content"].get("text", "")


def worker_pid(messages: Iterator[tuple[float, dict[str, Any]]]) -> int:
    """The host pid of the worker running the hop, from the `started` the display shows ("runtime/pid")."""
    for _, msg in messages:
        state = hop_phase(msg)
        if state and isinstance(state.get("worker"), str):
            return int(state["worker"].rsplit("/", 1)[1])
    raise AssertionError("the hop display never named its worker")


def check_store(data: Path) -> set[str]:
    """Every snapshot's manifest, chunks and file tree are on the gateway's disk with the bytes their digests
    name, and every ref names a snapshot; returns the snapshot ids. Reads the store's files and database directly,
    as a crash would leave them."""
    db = sqlite3.connect(f"file:{data / 'kernelhop.db'}?mode=ro", uri=True)
    try:
        snapshots = dict(db.execute("SELECT id, manifest FROM snapshots").fetchall())
        refs = db.execute("SELECT owner, name, snapshot FROM snapshot_refs").fetchall()
    finally:
        db.close()
    for owner, name, snapshot in refs:
        assert snapshot in snapshots, f"ref {owner}/{name} names snapshot {snapshot}, which the store lacks"

    on_disk = stored_blobs(data / "cas")

    def read(digest: Digest) -> bytes:
        assert digest.hash in on_disk, f"blob {digest} is missing from the store"
        blob = on_disk[digest.hash].read()
        assert digest_of(blob) == digest, f"blob {digest} on disk does not match its digest"
        return blob

    for sid, manifest_text in snapshots.items():
        manifest = Manifest.from_bytes(read(Digest.parse(manifest_text)))
        for chunk in manifest.blob_digests():
            read(chunk)
        if manifest.files is not None:
            listing = read_tree(manifest.files.tree, lambda ds: {d: read(d) for d in ds})
            for blob in listing.blob_digests():
                read(blob)
    return set(snapshots)
