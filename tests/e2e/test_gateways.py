"""Several gateways on one PostgreSQL and one S3 store (ARCHITECTURE.md, "Several gateways"), real processes on
loopback: gateways A and B, one runtime of one posed slot registered with both, real kernels configured with both.

- a hop through A and one through B share the one slot: the second waits for the first, never on the same slot;
- A killed (SIGKILL) while a kernel's run waits in its queue behind another run: the run completes through B;
- A killed while a kernel's cell runs: the cell fails saying so, the kernel's state is intact, and its next hop
  goes through B; once A misses 3 beats, B ends the run's row as gateway_lost and `kernelhop usage` counts it.

The kernels act as a user made on A (`user_add`, as `kernelhop user add` does): users are in the shared database,
so its token opens B too. The runtime holds a runtime token of each gateway (`--gateway A,B`, KERNELHOP_TOKEN="TA,TB").
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faults import hop_phase, in_phase, printed, when
from kernelhop.cli.services import Service, runtime_token, start_gateway, start_runtime
from kernelhop.client.gateway import GatewayConnection
from kernelhop_testing import Kernel
from test_shared_stores import cli, moto, postgres, psql  # noqa: F401 (fixtures)


@dataclass
class Gateways:
    root: Path
    token: str
    stores: list[str]
    user_token: str
    a: Service
    b: Service
    runtime: Service

    def ws(self, gateway: Service) -> str:
        return gateway.ready["ws"]

    def env(self, *order: Service) -> dict[str, str]:
        return {
            **os.environ,
            "KERNELHOP_GATEWAY": ",".join(self.ws(g) for g in order),
            "KERNELHOP_TOKEN": self.user_token,
            "KERNELHOP_HOME": str(self.root / "home"),
        }

    def kill_a(self) -> None:
        self.a.process.send_signal(signal.SIGKILL)
        self.a.process.wait(30)

    def restart_a(self) -> None:
        """A again on its ports and data, as after a crash; the runtime registers with it by itself."""
        ws, grpc = self.a.ready["ws"], self.a.ready["grpc"]
        port, grpc_port = int(ws.rsplit(":", 1)[1].split("/")[0]), int(grpc.rsplit(":", 1)[1])
        self.a = gateway(self.root / "a", self.token, self.stores, port, grpc_port)
        wait_for_runtime(self.ws(self.a), self.token)


def gateway(data: Path, token: str, stores: list[str], port: int = 0, grpc_port: int = 0) -> Service:
    # Beats every 0.5 s: a killed gateway is lapsed, and its runs ended by the other, 1.5 s after its last beat.
    return start_gateway(
        data=data, token=token, port=port, grpc_port=grpc_port, runtime_token_file=data / "runtime-token",
        extra=[*stores, "--liveness", "0.5"], echo=None,
    )


def wait_for_runtime(ws: str, token: str, timeout: float = 60) -> None:
    client = GatewayConnection(ws, token, source="the test's admin token")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.classes().get("h100", {}).get("runtimes", 0) >= 1:
                    return
            except Exception:
                client.close()
            assert time.monotonic() < deadline, f"the runtime did not register with {ws}"
            time.sleep(0.2)
    finally:
        client.close()


@pytest.fixture
def gateways(postgres: str, moto: tuple[str, Path], tmp_path: Path) -> Iterator[Gateways]:  # noqa: F811
    endpoint, _ = moto
    token = secrets.token_hex(16)
    stores = ["--store", "s3://hops/shared", "--s3-endpoint", endpoint, "--metadata", postgres]
    services: list[Service] = []
    try:
        a = gateway(tmp_path / "a", token, stores)
        services.append(a)
        b = gateway(tmp_path / "b", token, stores)
        services.append(b)
        runtime = start_runtime(
            gateway=f"{a.ready['grpc']},{b.ready['grpc']}",
            token=",".join(runtime_token(tmp_path / name / "runtime-token") for name in ("a", "b")),
            classes=["h100"],
            capacity=1,
            cache=tmp_path / "runtime-cache",
            echo=None,
        )
        services.append(runtime)
        admin = GatewayConnection(a.ready["ws"], token, source="the test's admin token")
        try:
            reply, _ = admin._op("user_add", name="ann")
        finally:
            admin.close()
        g = Gateways(tmp_path, token, stores, str(reply["token"]), a, b, runtime)
        yield g
        services[0] = g.a
    finally:
        for service in reversed(services):
            service.stop()


def blocking(kernel: Kernel, seconds: float) -> tuple[threading.Thread, dict]:
    """A cell holding the one slot for `seconds`, run in a thread that has started it; its Execution lands in the
    dict."""
    running, result = threading.Event(), {}
    code = f"%%gpu h100\nimport time\nprint('holding', flush=True)\ntime.sleep({seconds})\nheld = True"

    def go() -> None:
        result["execution"] = kernel.run(code, on_message=when(printed("holding"), lambda _: running.set()))

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    assert running.wait(120), "the blocking cell never ran"
    return thread, result


def phases(execution) -> list[str]:
    return [s["phase"] for _, m in execution.messages if (s := hop_phase(m)) is not None]


def test_two_gateways_share_a_runtime_and_survive_losing_one(gateways: Gateways) -> None:
    g = gateways
    via_a = Kernel(g.env(g.a, g.b))
    via_b = Kernel(g.env(g.b, g.a))
    third = None
    try:
        for k in (via_a, via_b):
            assert k.run("import numpy as np\nx = np.arange(200_000)\nn = 0").status == "ok"

        # (a) A's run holds the slot; B's waits for it (the runtime told B the slot is taken), then runs.
        thread, held = blocking(via_a, 3)
        second = via_b.run("%%gpu h100\nn += 1\ns = int(x.sum())")
        thread.join(120)
        assert held["execution"].status == "ok", held["execution"].error_text
        assert second.status == "ok", second.error_text
        assert "queued" in phases(second), "B's hop did not wait for the slot A's run held"
        assert via_b.value("(n, s == int(x.sum()))") == "(1, True)"
        assert via_a.value("held") == "True"
        assert not [line for line in g.runtime.lines if "is busy; using slot" in line], "two runs met on one slot"

        # (b) A dies while a run waits in its queue behind B's: the run is sent again through B and completes.
        third = Kernel(g.env(g.a, g.b))
        assert third.run("import numpy as np\ny = np.ones(100_000)\nm = 0").status == "ok"
        thread, held = blocking(via_b, 4)
        queued = when(in_phase("queued"), lambda _: g.kill_a())
        waited = third.run("%%gpu h100\nm += 1\nt = float(y.sum())", on_message=queued)
        thread.join(120)
        assert queued.fired, "the hop through A never waited in the queue"
        assert waited.status == "ok", waited.error_text
        assert "is gone" in waited.stream_text("stderr"), waited.stream_text("stderr")
        assert third.value("(m, t)") == "(1, 100000.0)"
        # The blobs went to the shared store through A; B's view of the user (shared holds) lacks none of them.
        uploads = [s["bytes_total"] for _, msg in waited.messages if (s := hop_phase(msg)) and s["phase"] == "upload"]
        assert uploads[0] > 0 and uploads[-1] == 0, uploads

        # (c) A back; a kernel's cell runs through A when A dies: a clear error, the state intact, the next hop via B.
        g.restart_a()
        counted = json.loads(cli(g.env(g.b), "usage", "--json"))["total"]["runs"]
        kill = when(printed("cell-is-running"), lambda _: g.kill_a())
        lost = via_a.run(
            "%%gpu h100\nimport time\nn = 99\nprint('cell-is-running', flush=True)\ntime.sleep(30)", on_message=kill
        )
        assert kill.fired, lost.error_text
        assert lost.status == "error"
        told = lost.error_text
        assert g.ws(g.a) in told and "went away while the cell ran" in told and "unchanged" in told, told
        assert g.ws(g.b) in told, told
        assert via_a.value("n") == "0", "the lost run changed the kernel's state"
        # A's runs were ended by B (or A's later incarnation): the one that ran is counted once, in the shared ledger.
        postgres = g.stores[g.stores.index("--metadata") + 1]
        started_lost = "SELECT count(*) FROM runs WHERE status = 'gateway_lost' AND started_at IS NOT NULL"
        deadline = time.monotonic() + 30
        while psql(postgres, started_lost) != "1":
            assert time.monotonic() < deadline, psql(postgres, "SELECT id, status, started_at FROM runs")
            time.sleep(0.2)
        assert psql(postgres, "SELECT count(*) FROM usage WHERE outcome = 'gateway_lost'") == "1"
        assert json.loads(cli(g.env(g.b), "usage", "--json"))["total"]["runs"] == counted + 1
        after = via_a.run("%%gpu h100\nn += 2\nprint('through', n)")
        assert after.status == "ok", after.error_text
        assert "through 2" in after.stream_text("stdout")
        assert via_a.value("(n, int(x.sum()) == 19999900000)") == "(2, True)"
    finally:
        for k in (via_a, via_b, third):
            if k is not None:
                k.shutdown()
