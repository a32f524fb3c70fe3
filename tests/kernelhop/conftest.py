"""Fixtures for the kernel's tests: a fake gateway on loopback (kernelhop_fake_gateway.py) and discovery aimed at it."""

import socket

import pytest
from kernelhop_fake_gateway import TOKEN, FakeGateway


@pytest.fixture
def gateway():
    gw = FakeGateway()
    yield gw
    gw.close()


@pytest.fixture
def gateway_env(gateway, monkeypatch, tmp_path):
    """Point discovery at the fake gateway, away from any real ~/.kernelhop; hops carry an empty working directory."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("KERNELHOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERNELHOP_GATEWAY", gateway.url)
    monkeypatch.setenv("KERNELHOP_TOKEN", TOKEN)
    return gateway


@pytest.fixture
def dead_url():
    """A loopback port nobody listens on: a gateway that is gone."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws/v1"
