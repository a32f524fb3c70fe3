"""TLS on loopback: a gateway with `--tls auto`, a runtime and kernels that verify it by CA file, by pinned fingerprint,
or by what gateway.json says; a wrong pin or no trust at all is refused before a token is sent, with a message that
says what to set. (Across hosts, with every byte checked: test_three_hosts.py.)"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from kernelhop.cli.services import GATEWAY_READY, Service, node_entry, start_runtime, start_service
from kernelhop_testing import Kernel
from kernelhop.tls import fingerprint_of

FINGERPRINT = re.compile(r"^kernelhop gateway TLS certificate sha256 (?P<fp>[0-9A-F:]{95})")


@dataclass
class TlsGateway:
    service: Service
    data: Path
    token: str
    fingerprint: str

    @property
    def url(self) -> str:
        return self.service.ready["ws"]

    @property
    def ca(self) -> str:
        return str(self.data / "tls" / "ca.pem")

    def kernel_env(self, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELHOP_")}
        env.update(
            {"KERNELHOP_GATEWAY": self.url, "KERNELHOP_TOKEN": self.token, "KERNELHOP_HOME": str(self.data / "nowhere")}
        )
        env.update(settings)
        return env


def fingerprint_line(lines: list[str]) -> str:
    return next(m["fp"] for m in map(FINGERPRINT.match, lines) if m)


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    root = tmp_path_factory.mktemp("tls")
    token = secrets.token_hex(16)
    command = node_entry("gateway") + ["--tls", "auto", "--port", "0", "--grpc-port", "0", "--data", str(root)]
    command += ["--runtime-token-file", str(root / "runtime-token")]
    service = start_service("gateway", command, GATEWAY_READY, env={**os.environ, "KERNELHOP_TOKEN": token}, echo=None)
    gw = TlsGateway(service, root, token, fingerprint_line(service.lines))
    runtime = start_runtime(
        gateway=gw.url,
        token=(root / "runtime-token").read_text().strip(),
        classes=["h100"],
        cache=root / "runtime-cache",
        extra=["--ca", gw.ca],
        echo=None,
    )
    yield gw
    runtime.stop()
    service.stop()


def test_gateway_prints_its_fingerprint_and_discovery_names_wss_and_the_ca(tls_gateway: TlsGateway) -> None:
    der = ssl.PEM_cert_to_DER_cert((tls_gateway.data / "tls" / "server.pem").read_text())
    assert fingerprint_of(der) == tls_gateway.fingerprint
    assert tls_gateway.url.startswith("wss://127.0.0.1:")
    discovery = json.loads((tls_gateway.data / "gateway.json").read_text())
    assert discovery["url"] == tls_gateway.url
    assert discovery["ca"] == tls_gateway.ca
    assert discovery["fingerprint"] == tls_gateway.fingerprint


@pytest.mark.parametrize("trust", ["ca", "fingerprint", "gateway.json"])
def test_a_hop_over_tls_verified_by_ca_pin_or_discovery(tls_gateway: TlsGateway, trust: str) -> None:
    if trust == "ca":
        env = tls_gateway.kernel_env(KERNELHOP_CA=tls_gateway.ca)
    elif trust == "fingerprint":
        # Lower-case without colons, as someone may paste it: the pin alone, no CA file on this host.
        env = tls_gateway.kernel_env(KERNELHOP_FINGERPRINT=tls_gateway.fingerprint.replace(":", "").lower())
    else:
        env = tls_gateway.kernel_env(KERNELHOP_HOME=str(tls_gateway.data))
        del env["KERNELHOP_GATEWAY"]
    kernel = Kernel(env)
    try:
        assert kernel.run("x = 20").status == "ok"
        hop = kernel.run("%%gpu h100 -q\ny = x + 1")
        assert hop.status == "ok", hop.error_text
        assert kernel.value("y") == "21"
    finally:
        kernel.shutdown()


def test_a_wrong_pin_or_no_trust_is_refused_saying_what_to_set_and_the_state_stays(tls_gateway: TlsGateway) -> None:
    wrong = (
        "00:" + tls_gateway.fingerprint[3:]
        if not tls_gateway.fingerprint.startswith("00")
        else "11" + tls_gateway.fingerprint[2:]
    )
    for env, said in [
        (tls_gateway.kernel_env(KERNELHOP_FINGERPRINT=wrong), f"not the pinned {wrong}"),
        (tls_gateway.kernel_env(), "set KERNELHOP_CA"),
        (tls_gateway.kernel_env(KERNELHOP_GATEWAY=tls_gateway.url.replace("wss://", "ws://")), "wss://"),
    ]:
        kernel = Kernel(env)
        try:
            assert kernel.run("x = 20").status == "ok"
            hop = kernel.run("%%gpu h100 -q\nx = 0")
            assert hop.status == "error"
            assert said in hop.error_text, hop.error_text
            assert kernel.value("x") == "20"
        finally:
            kernel.shutdown()


def run_runtime(tls_gateway: TlsGateway, *args: str) -> subprocess.CompletedProcess[str]:
    command = node_entry("runtime") + [
        "--python",
        sys.executable,
        "--class",
        "h100",
        "--cache",
        str(tls_gateway.data / "rc2"),
    ]
    env = {**os.environ, "KERNELHOP_TOKEN": (tls_gateway.data / "runtime-token").read_text().strip()}
    return subprocess.run(command + list(args), capture_output=True, text=True, env=env, timeout=60)


def test_runtimes_verify_the_gateway_by_pin_and_refuse_a_wrong_pin_or_plain_text(tls_gateway: TlsGateway) -> None:
    grpc = tls_gateway.service.ready["grpc"]
    pinned = start_runtime(
        gateway=grpc,
        token=(tls_gateway.data / "runtime-token").read_text().strip(),
        classes=["a100"],
        cache=tls_gateway.data / "rc3",
        extra=["--fingerprint", tls_gateway.fingerprint],
        echo=None,
    )
    assert pinned.ready["classes"] == "a100"
    pinned.stop()
    wrong = (
        "00" + tls_gateway.fingerprint[2:]
        if not tls_gateway.fingerprint.startswith("00")
        else "11" + tls_gateway.fingerprint[2:]
    )
    refused = run_runtime(tls_gateway, "--gateway", grpc, "--fingerprint", wrong)
    assert refused.returncode == 1 and "refusing to send it our token" in refused.stderr, refused.stderr
    plain = run_runtime(tls_gateway, "--gateway", grpc)
    assert (
        plain.returncode == 1 and "If the gateway runs with TLS" in plain.stderr and "kernelhop gateway" in plain.stderr
    ), plain.stderr
    untrusted = run_runtime(tls_gateway, "--gateway", tls_gateway.url)
    assert untrusted.returncode == 1 and "--ca DATA/tls/ca.pem" in untrusted.stderr, untrusted.stderr


def test_cli_over_tls_makes_a_class_bound_runtime_token_that_a_runtime_takes_with_token(
    tls_gateway: TlsGateway,
) -> None:
    # The admin's `kernelhop` on the gateway's host: gateway.json names the wss:// URL and CA, admin-token its token.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELHOP_")}
    env["KERNELHOP_HOME"] = str(tls_gateway.data)

    def kernelhop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kernelhop.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )

    created = kernelhop("runtime-token", "create", "--class", "a100")
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]
    token_id = created.stdout.splitlines()[0].split()[2]
    runtime = start_runtime(
        gateway=tls_gateway.url,
        token="",  # not in the environment: given with --token
        classes=["a100"],
        cache=tls_gateway.data / "rc4",
        extra=["--token", token, "--ca", tls_gateway.ca],
        echo=None,
    )
    assert runtime.ready["classes"] == "a100"
    runtime.stop()
    other_class = run_runtime(tls_gateway, "--gateway", tls_gateway.url, "--ca", tls_gateway.ca, "--token", token)
    assert other_class.returncode == 1 and 'for GPU class a100 only; it cannot offer "h100"' in other_class.stderr, (
        other_class.stderr
    )
    assert kernelhop("runtime-token", "revoke", token_id).returncode == 0
    revoked = run_runtime(tls_gateway, "--gateway", tls_gateway.url, "--ca", tls_gateway.ca, "--token", token)
    assert revoked.returncode == 1 and "refused our token" in revoked.stderr, revoked.stderr


def test_jupyterlab_relays_the_browser_to_a_tls_gateway_it_verifies(tls_gateway: TlsGateway, tmp_path: Path) -> None:
    """The extension's browser side talks to its own Jupyter server (`/kernelhop/ws`, same origin); the server opens
    the wss:// link and verifies it as kernels do: by the pin here, and a wrong pin closes the browser's socket."""
    from websockets.sync.client import connect

    # The server reads its settings at each connection: its gateway.json names the gateway and the pin.
    home = tmp_path / "lab-home"
    home.mkdir()

    def settings(fingerprint: str) -> None:
        discovery = {"url": tls_gateway.url, "token": tls_gateway.token, "fingerprint": fingerprint}
        (home / "gateway.json").write_text(json.dumps(discovery))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lab_token = secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--ServerApp.port={port}",
        f"--IdentityProvider.token={lab_token}",
    ]
    command += ["--ServerApp.ip=127.0.0.1", "--ServerApp.open_browser=False", f"--ServerApp.root_dir={tmp_path}"]
    # The relay alone: the lab's other server extensions only slow the start.
    others = ("jupyterlab", "jupyter_lsp", "notebook_shim", "jupyter_server_terminals")
    only = repr({"kernelhop.lab.server": True, **dict.fromkeys(others, False)})
    command += [f"--ServerApp.jpserver_extensions={only}", "--allow-root"]
    env = tls_gateway.kernel_env(KERNELHOP_HOME=str(home))
    del env["KERNELHOP_GATEWAY"], env["KERNELHOP_TOKEN"]
    ready = re.compile(rf".*http://127\.0\.0\.1:{port}/\S*\?token=")
    server = start_service("jupyter server", command, ready, env=env, timeout=90, echo=None)

    def browser() -> Any:
        for _ in range(150):
            try:
                return connect(f"ws://127.0.0.1:{port}/kernelhop/ws?token={lab_token}", open_timeout=30)
            except ConnectionRefusedError:
                time.sleep(0.2)
        raise AssertionError(f"the Jupyter server never took connections on {port}:\n" + "\n".join(server.lines[-20:]))

    try:
        settings(tls_gateway.fingerprint)
        with browser() as ws:
            ws.send(json.dumps({"id": "1", "op": "whoami"}))
            reply = json.loads(ws.recv(timeout=30))
        assert reply["re"] == "1" and reply["user"] == "admin", reply
        wrong = (
            "00" + tls_gateway.fingerprint[2:]
            if not tls_gateway.fingerprint.startswith("00")
            else "11" + tls_gateway.fingerprint[2:]
        )
        settings(wrong)
        with browser() as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4502, closed.value
    finally:
        server.stop()
