"""The gateway as a JupyterHub service: a real JupyterHub (from PyPI, dummy authenticator, configurable-http-proxy
from npm) on loopback starts the gateway with `--jupyterhub`; two Hub users, ann (a Hub admin) and bob, get tokens
through the Hub's REST API, and their kernels hold only those (JUPYTERHUB_API_TOKEN, as a user's server gives its
kernels): nobody ran `kernelhop user add`. Each kernel is who the Hub says, with the Hub's admin rights, hops as
that user, and bob cannot read ann's snapshot."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernelhop.cli.services import Service, node_entry, project_root, start_runtime, start_service
from kernelhop_testing import Kernel

HUB_READY = re.compile(r".*JupyterHub is now running")
CHP = project_root() / "node_modules" / ".bin" / "configurable-http-proxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Hub:
    service: Service
    api: str
    tester_token: str
    gateway_url: str
    data: Path

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.api}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.tester_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read() or b"{}")

    def token_for(self, user: str) -> str:
        return self.call("POST", f"/users/{user}/tokens", {"note": "kernelhop test", "expires_in": 3600})["token"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if not CHP.exists():
        pytest.fail(f"configurable-http-proxy is missing at {CHP}: run `npm ci` (it is a devDependency of gateway/)")
    root = tmp_path_factory.mktemp("hub")
    hub_port, proxy_port, proxy_api_port = free_port(), free_port(), free_port()
    ws_port, grpc_port = free_port(), free_port()
    tester_token = secrets.token_hex(16)
    gateway_data = root / "gateway"
    gateway = node_entry("gateway") + ["--jupyterhub", "--port", str(ws_port), "--grpc-port", str(grpc_port)]
    gateway += ["--data", str(gateway_data), "--runtime-token-file", str(gateway_data / "runtime-token")]
    config = root / "jupyterhub_config.py"
    config.write_text(
        f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = {str(root / "proxy.pid")!r}
c.JupyterHub.db_url = "sqlite:///{root / "jupyterhub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(root / "cookie_secret")!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {{"ann", "bob"}}
c.Authenticator.admin_users = {{"ann"}}
c.JupyterHub.services = [
    {{"name": "kernelhop", "command": {gateway!r}, "environment": {{"PATH": {os.environ["PATH"]!r}}}}},
    {{"name": "tester", "api_token": {tester_token!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "tester", "scopes": ["admin:users", "tokens"], "services": ["tester"]}},
]
"""
    )
    service = start_service(
        "jupyterhub",
        [sys.executable, "-m", "jupyterhub", "-f", str(config)],
        HUB_READY,
        env={k: v for k, v in os.environ.items() if not k.startswith(("KERNELHOP_", "JUPYTERHUB_"))},
        timeout=120,
        echo=None,
    )
    try:
        deadline = time.monotonic() + 60
        while not (gateway_data / "gateway.json").exists():
            assert time.monotonic() < deadline, "the Hub's kernelhop service wrote no gateway.json:\n" + "\n".join(
                service.lines[-30:]
            )
            time.sleep(0.2)
        time.sleep(0.5)  # the ready line comes just after gateway.json
        discovery = json.loads((gateway_data / "gateway.json").read_text())
        runtime = start_runtime(
            gateway=discovery["grpc"],
            token=(gateway_data / "runtime-token").read_text().strip(),
            classes=["h100"],
            cache=root / "runtime-cache",
            echo=None,
        )
        try:
            yield Hub(service, f"http://127.0.0.1:{hub_port}/hub/api", tester_token, discovery["url"], root)
        finally:
            runtime.stop()
    finally:
        service.stop(timeout=30)


def hub_kernel(hub: Hub, token: str) -> Kernel:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNELHOP_", "JUPYTERHUB_"))}
    # What a user's server under JupyterHub has, and the gateway's address its admin configured (Spawner.environment).
    env.update(JUPYTERHUB_API_TOKEN=token, KERNELHOP_GATEWAY=hub.gateway_url, KERNELHOP_HOME=str(hub.data / "nowhere"))
    return Kernel(env)


WHOAMI = (
    "from kernelhop.config import discover\n"
    "from kernelhop.client.gateway import GatewayConnection, GatewayError\n"
    "_cfg = discover()\n"
    "_c = GatewayConnection(_cfg.url, _cfg.token, source=_cfg.source)\n"
    "def op(name, **fields):\n"
    "    try:\n"
    "        return _c._op(name, **fields)[0]\n"
    "    except GatewayError as e:\n"
    "        return {'refused': e.code}\n"
    "me = op('whoami')\n"
    "print(me['user'], me['admin'], _cfg.source)\n"
)


def test_hub_users_are_who_the_hub_says_with_its_admin_rights_and_cannot_read_each_other(hub: Hub) -> None:
    ann_token, bob_token = hub.token_for("ann"), hub.token_for("bob")
    ann, bob = hub_kernel(hub, ann_token), hub_kernel(hub, bob_token)
    try:
        got = ann.run(WHOAMI)
        assert got.status == "ok", got.error_text
        assert got.stream_text("stdout").startswith(
            "ann True URL from KERNELHOP_GATEWAY, token from JUPYTERHUB_API_TOKEN"
        )
        got = bob.run(WHOAMI)
        assert got.status == "ok", got.error_text
        assert got.stream_text("stdout").startswith("bob False")

        # Admin rights follow the Hub's: ann lists users, bob is refused.
        assert "bob" in ann.value("[u['name'] for u in op('user_list')['users']]")
        assert bob.value("op('user_list')") == "{'refused': 'forbidden'}"

        # A hop as each user.
        assert ann.run("secret = 'ann-' + 'only'").status == "ok"
        hop = ann.run("%%gpu h100 -q\nshout = secret.upper()")
        assert hop.status == "ok", hop.error_text
        assert ann.value("shout") == "'ANN-ONLY'"

        saved = ann.run("%snapshot save annsnap")
        assert saved.status == "ok", saved.error_text
        sid = re.search(r"\(([0-9a-f]{16,})\)", saved.stream_text("stdout")).group(1)  # type: ignore[union-attr]

        # bob, holding his own Hub token, reaches for ann's snapshot by its id and by her ref: neither is his to read.
        listed = bob.run("%snapshot list")
        assert listed.status == "ok", listed.error_text
        assert sid[:12] not in listed.stream_text("stdout")
        for ref in (sid, "annsnap", "ann/annsnap"):
            stolen = bob.run(f"%snapshot restore {ref} --trust")
            assert stolen.status == "error", stolen.stream_text("stdout")
            assert bob.value("'secret' in globals()") == "False"
        assert ann.value(f"'snapshot' in op('snapshot_get', ref={sid!r})") == "True"  # hers: she reads it
        assert bob.value(f"op('snapshot_get', ref={sid!r})") == "{'refused': 'forbidden'}"
    finally:
        ann.shutdown()
        bob.shutdown()


def test_a_token_the_hub_does_not_know_is_refused(hub: Hub) -> None:
    kernel = hub_kernel(hub, "not-a-hub-token-" + secrets.token_hex(8))
    try:
        hop = kernel.run("%%gpu h100 -q\nx = 1")
        assert hop.status == "error"
        assert "refused the token" in hop.error_text and "JUPYTERHUB_API_TOKEN" in hop.error_text, hop.error_text
    finally:
        kernel.shutdown()
