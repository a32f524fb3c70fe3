"""JupyterLab's relay (`/kernelhop/ws`, kernelhop/lab/server.py) with several gateways named: the browser reaches
the first that answers, a dead one first in the list included, and is told every address it tried when none does.
A real Jupyter server with the relay alone, fake gateways behind it."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernelhop_fake_gateway import TOKEN, FakeGateway
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from kernelhop.cli.services import start_service
from kernelhop.lab.server import CLOSE_GATEWAY_DOWN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Jupyter server with the relay alone; yields `browser(urls)`, which names the gateways (a comma list) in the
    server's settings and opens a browser's socket to the relay."""
    port, lab_token = free_port(), secrets.token_hex(16)
    # The server reads its settings at each connection, from gateway.json in its KERNELHOP_HOME.
    home = tmp_path / "home"
    home.mkdir()
    others = ("jupyterlab", "jupyter_lsp", "notebook_shim", "jupyter_server_terminals")
    command = [
        sys.executable, "-m", "jupyter_server", f"--ServerApp.port={port}", f"--IdentityProvider.token={lab_token}",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.open_browser=False", f"--ServerApp.root_dir={tmp_path}",
        f"--ServerApp.jpserver_extensions={repr({'kernelhop.lab.server': True, **dict.fromkeys(others, False)})}",
        "--allow-root",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELHOP_")}
    # A token of the environment goes to every gateway named (one read from a gateway's own file, to that one only).
    env.update(KERNELHOP_HOME=str(home), KERNELHOP_TOKEN=TOKEN)
    ready = re.compile(rf".*http://127\.0\.0\.1:{port}/\S*\?token=")
    server = start_service("jupyter server", command, ready, env=env, timeout=90, echo=None)

    def browser(urls: str):
        (home / "gateway.json").write_text(json.dumps({"url": urls}))
        for _ in range(150):
            try:
                return connect(f"ws://127.0.0.1:{port}/kernelhop/ws?token={lab_token}", open_timeout=30)
            except ConnectionRefusedError:
                time.sleep(0.2)
        raise AssertionError("the Jupyter server never took connections:\n" + "\n".join(server.lines[-20:]))

    try:
        yield browser
    finally:
        server.stop()


def test_the_relay_goes_past_a_dead_gateway_to_the_next(lab: Any) -> None:
    alive = FakeGateway()
    dead = f"ws://127.0.0.1:{free_port()}/ws/v1"
    try:
        for _ in range(2):  # the second time the dead one is tried after the one that answered
            with lab(f"{dead},{alive.url}") as ws:
                ws.send(json.dumps({"id": "1", "op": "classes"}))
                reply = json.loads(ws.recv(timeout=30))
            assert reply["re"] == "1" and reply["ok"] is True, reply
        assert [op for op in alive.ops() if op == "classes"] == ["classes", "classes"]
    finally:
        alive.close()


def test_the_relay_says_every_gateway_it_tried_when_none_answers(lab: Any) -> None:
    dead = [f"ws://127.0.0.1:{free_port()}/ws/v1" for _ in range(2)]
    with lab(",".join(dead)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    received = closed.value.rcvd
    assert received is not None and received.code == CLOSE_GATEWAY_DOWN, closed.value
    assert all(f"127.0.0.1:{u.split(':')[2].split('/')[0]}" in received.reason for u in dead), received.reason
