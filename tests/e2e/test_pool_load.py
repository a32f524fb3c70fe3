"""The pool under load on loopback: a real gateway, 2 real runtimes posing 2 h100 slots each, 3 users with 8 real
ipykernels each, 10 `%%gpu` hops per kernel, all at once. No hop is lost, equal demand gets equal GPU time, and the
only workers evicted are idle ones (a running one evicted would fail its hop). Then a runtime dies: its warm session's
next cell restores on the other runtime.

Workers preload nothing here (KERNELHOP_PRELOAD=""): with 24 sessions on 4 slots most hops evict and start a worker,
and importing torch for each would be most of the test's time on 2 cores. GPUs are posed: no GPU on this machine."""

from __future__ import annotations

import re
import resource
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kernelhop.client.gateway import GatewayConnection
from kernelhop.magics.hop_display import MIME_TYPE
from kernelhop.cli.services import Service, runtime_token, start_gateway, start_runtime
from kernelhop_testing import Kernel

USERS = ("ann", "bob", "cat")
KERNELS_PER_USER = 8
HOPS = 10
CELL = "%%gpu h100\nimport os, time\ntime.sleep(0.3)\nhops += 1\ndevice = os.environ['CUDA_VISIBLE_DEVICES']"


class Pool:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KERNELHOP_PRELOAD", "")
        self.root = root
        self.admin = secrets.token_hex(16)
        self.token_file = root / "runtime-token"
        self.gateway = start_gateway(
            data=root / "gateway", token=self.admin, port=0, grpc_port=0, runtime_token_file=self.token_file, echo=None
        )
        self.runtimes: dict[str, Service] = {}

    def add_runtime(self, name: str, slots: int) -> Service:
        service = start_runtime(
            gateway=self.gateway.ready["grpc"],
            token=runtime_token(self.token_file),
            classes=["h100"],
            cache=self.root / f"cache-{name}",
            extra=["--gpus", str(slots), "--name", name, "--warm", "1"],
            echo=None,
        )
        self.runtimes[name] = service
        return service

    def user_env(self, user: str) -> dict[str, str]:
        client = GatewayConnection(self.gateway.ready["ws"], self.admin)
        try:
            token = client._op("user_add", name=user)[0]["token"]
        finally:
            client.close()
        return {
            "KERNELHOP_GATEWAY": self.gateway.ready["ws"],
            "KERNELHOP_TOKEN": token,
            "KERNELHOP_HOME": str(self.root / f"home-{user}"),
        }

    def stop(self) -> None:
        for service in self.runtimes.values():
            service.stop()
        self.gateway.stop()


@pytest.fixture
def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    p = Pool(tmp_path, monkeypatch)
    yield p
    p.stop()


def hop_end(execution: Any) -> dict[str, Any]:
    """The hop display's last state: phase done with its runtime and GPU-seconds."""
    for _, msg in reversed(execution.messages):
        data = msg.get("content", {}).get("data", {})
        if msg["msg_type"] in ("display_data", "update_display_data") and MIME_TYPE in data:
            return dict(data[MIME_TYPE])
    raise AssertionError("the hop published no display")


def start_kernel(env: dict[str, str]) -> Kernel:
    kernel = Kernel(env)
    assert kernel.run("hops = 0").status == "ok"
    return kernel


# 24 kernels and ~300 worker starts: a few minutes of CPU, more on a shared machine.
@pytest.mark.timeout(1200)
def test_three_users_24_kernels_4_slots_no_hop_lost_fair_shares_only_idle_evicted(pool: Pool) -> None:
    import os

    pool.add_runtime("rt-1", 2)
    pool.add_runtime("rt-2", 2)
    envs = {u: {**os.environ, **pool.user_env(u)} for u in USERS}
    kernels: list[tuple[str, Kernel]] = []
    began = time.monotonic()
    try:
        with ThreadPoolExecutor(8) as starting:
            owners = [u for u in USERS for _ in range(KERNELS_PER_USER)]
            kernels = list(zip(owners, starting.map(start_kernel, [envs[u] for u in owners])))
        ends: list[tuple[str, float, dict[str, Any]]] = []
        failures: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(len(kernels))

        def drive(user: str, kernel: Kernel) -> None:
            start.wait()
            for i in range(HOPS):
                execution = kernel.run(CELL, timeout=600)
                with lock:
                    if execution.status != "ok":
                        failures.append(f"{user} hop {i}: {execution.error_text}")
                        return
                    ends.append((user, time.monotonic(), hop_end(execution)))

        threads = [threading.Thread(target=drive, args=pair) for pair in kernels]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == [], failures
        # No hop lost: every kernel has all ten increments home, and each cell saw one posed device.
        for user, kernel in kernels:
            assert kernel.value("hops") == str(HOPS), user
            assert kernel.value("device") in ("'0'", "'1'")
        assert len(ends) == len(kernels) * HOPS
        assert {e[2]["runtime"] for e in ends} == {"rt-1", "rt-2"}

        # Fair shares: GPU-seconds each user got until the first user was done, within 10 % of the mean.
        first_done = min(max(t for u, t, _ in ends if u == user) for user in USERS)
        shares = {user: sum(e["gpu_s"] for u, t, e in ends if u == user and t <= first_done) for user in USERS}
        mean = sum(shares.values()) / len(shares)
        assert all(abs(s - mean) <= 0.1 * mean for s in shares.values()), shares

        # Evictions happened (24 sessions, 4 slots), and every one ended an idle worker: no hop failed above, and
        # the runtimes only ever ended a worker waiting between cells for eviction.
        evicted = [
            line
            for service in pool.runtimes.values()
            for line in service.lines
            if re.search(r"worker \d+ on slot \d+ ended: evicted for another session", line)
        ]
        assert len(evicted) > 0
    finally:
        for _, kernel in kernels:
            kernel.shutdown()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"pool load: {time.monotonic() - began:.0f} s wall; kernels' CPU {cpu.ru_utime + cpu.ru_stime:.0f} s")


def test_a_runtime_that_dies_its_warm_session_restores_on_another(pool: Pool) -> None:
    import os

    first = pool.add_runtime("rt-1", 1)
    env = {**os.environ, **pool.user_env("dan")}
    kernel = Kernel(env)
    try:
        assert kernel.run("hops = 0").status == "ok"
        done = kernel.run(CELL)
        assert done.status == "ok", done.error_text
        assert hop_end(done)["runtime"] == "rt-1"
        pool.add_runtime("rt-2", 1)
        first.process.kill()
        first.process.wait(10)
        # The gateway notices the Work stream end at once; the session was warm on rt-1 and restores cold on rt-2.
        again = kernel.run(CELL)
        assert again.status == "ok", again.error_text
        end = hop_end(again)
        assert end["runtime"] == "rt-2"
        assert kernel.value("hops") == "2"
    finally:
        kernel.shutdown()
