"""Elastic runtimes (issue 11) with the command provider and real processes: a gateway with no runtime at all starts
`kernelhop runtime` when a `%%gpu` cell waits, the cell runs on it, the runtime is released once idle (its process
ends, its one-time token is revoked), and the next cell brings one up again: scale to zero and back."""

from __future__ import annotations

import secrets
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelhop.client.gateway import GatewayConnection
from kernelhop.cli.services import Service, start_gateway
from kernelhop_testing import Kernel

IDLE_RELEASE_S = 2


@pytest.fixture
def elastic_gateway(tmp_path: Path) -> Iterator[tuple[Service, str]]:
    token = secrets.token_hex(16)
    runtime = [sys.executable, "-m", "kernelhop.cli", "runtime", "--python", sys.executable]
    # Single quotes keep the variables for the provider's shell, which gets them from the gateway.
    command = " ".join(map(shlex.quote, runtime)) + (
        ' --gateway "$KERNELHOP_GATEWAY" --class "$KERNELHOP_CLASS" --name "$KERNELHOP_RUNTIME_NAME"'
        f' --cache {shlex.quote(str(tmp_path))}/cache-"$KERNELHOP_RUNTIME_NAME"'
    )
    extra = ["--provider", "command", "--provider-command", command, "--elastic-class", "h100"]
    extra += ["--scale-up-after", "0", "--idle-release", str(IDLE_RELEASE_S)]
    gateway = start_gateway(data=tmp_path / "gateway", token=token, port=0, grpc_port=0, extra=extra, echo=None)
    yield gateway, token
    gateway.stop()


def runtimes_of(gateway: Service, token: str) -> int:
    client = GatewayConnection(gateway.ready["ws"], token, source="the test's admin token")
    try:
        reply, _ = client._op("classes")
        return reply["classes"]["h100"]["runtimes"]
    finally:
        client.close()


def test_a_cell_brings_a_runtime_up_from_zero_and_idle_releases_it(elastic_gateway, tmp_path: Path) -> None:
    gateway, token = elastic_gateway
    assert runtimes_of(gateway, token) == 0
    env = {"KERNELHOP_GATEWAY": gateway.ready["ws"], "KERNELHOP_TOKEN": token, "KERNELHOP_HOME": str(tmp_path)}
    kernel = Kernel(_base_env() | env)
    try:
        for round_ in (1, 2):
            execution = kernel.run(f"%%gpu h100\nx = {round_} * 21", timeout=180)
            assert execution.status == "ok", execution.error_text
            assert kernel.value("x") == str(round_ * 21)
            deadline = time.monotonic() + 60
            while runtimes_of(gateway, token) != 0:
                assert time.monotonic() < deadline, "the idle runtime was not released"
                time.sleep(0.5)
        log = "\n".join(gateway.lines)
        assert log.count("asking the command provider for a runtime of class h100") == 2
        assert log.count("releasing provided runtime: idle for") == 2
    finally:
        kernel.shutdown()
    tokens = GatewayConnection(gateway.ready["ws"], token, source="admin")
    try:
        listed, _ = tokens._op("runtime_token_list")
    finally:
        tokens.close()
    elastic = [t for t in listed["tokens"] if t.get("gpu_class") == "h100"]
    assert len(elastic) == 2 and all(t["revoked_at"] for t in elastic), listed


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("KERNELHOP_")}
