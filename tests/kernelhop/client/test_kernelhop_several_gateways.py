"""A kernel configured with several gateways (ARCHITECTURE.md, "Several gateways"), against two fake gateways: a hop
whose gateway dies before its cell started goes through the next one; one whose cell had started fails naming the
gateway, leaves the namespace alone, and the next hop goes through the other gateway."""

import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernelhop_fake_gateway import FakeGateway, send_json

from kernelhop.client.gateway import GatewayError
from kernelhop.magics.gpu import GpuMagics


@pytest.fixture
def two(gateway_env, monkeypatch):
    """Gateway A (the conftest's) first, then B."""
    b = FakeGateway()
    monkeypatch.setenv("KERNELHOP_GATEWAY", f"{gateway_env.url},{b.url}")
    yield gateway_env, b
    b.close()


@pytest.fixture
def shell(two):
    ip = InteractiveShell.instance()
    ip.reset(new_session=False)
    magics = GpuMagics(ip)
    ip.register_magics(magics)
    yield ip
    magics.close()
    ip.reset(new_session=False)


def dies_while_queued(gw, conn, msg):
    send_json(conn, {"re": msg["id"], "event": "queued", "position": 1})
    conn.close()


def dies_while_running(gw, conn, msg):
    send_json(conn, {"re": msg["id"], "event": "started", "runtime": "rt-1", "worker": "w", "warm": False,
                     "gpu_class": "h100", "simulated": True})
    conn.close()


def runs(gw):
    return [r for r in gw.requests if r["op"] == "run"]


def test_a_run_queued_on_a_gateway_that_dies_completes_through_the_next(shell, two, capsys):
    a, b = two
    a.runner = dies_while_queued
    shell.run_cell("x = 20")
    shell.run_cell_magic("gpu", "h100", "y = x + 1")
    assert shell.user_ns["y"] == 21
    assert len(runs(a)) == 1 and len(runs(b)) == 1
    # The same cell of the same session (its state captured again: the kernel ran nothing meanwhile).
    assert [(r["session"], r["code"]) for r in runs(a)] == [(r["session"], r["code"]) for r in runs(b)]
    assert f"the gateway at {a.url} is gone (its connection closed); this hop goes on through {b.url}" in (
        capsys.readouterr().err
    )


def test_a_gateway_that_dies_while_the_cell_runs_fails_the_hop_and_the_next_goes_to_the_other(shell, two):
    a, b = two
    a.runner = dies_while_running
    shell.run_cell("x = 20")
    with pytest.raises(GatewayError) as e:
        shell.run_cell_magic("gpu", "h100", "x = 99")
    assert e.value.code == "gateway_lost"
    assert a.url in str(e.value) and b.url in str(e.value) and "unchanged" in str(e.value)
    assert shell.user_ns["x"] == 20
    assert runs(b) == [], "a cell that may have run is not run again"
    shell.run_cell_magic("gpu", "h100", "x += 1")
    assert shell.user_ns["x"] == 21
    assert len(runs(a)) == 1 and len(runs(b)) == 1


def test_with_every_gateway_gone_the_hop_says_so(shell, two):
    a, b = two
    a.runner = b.runner = dies_while_queued
    shell.run_cell("x = 20")
    with pytest.raises(GatewayError) as e:
        shell.run_cell_magic("gpu", "h100", "x = 99")
    assert e.value.code == "connection_lost" and b.url in str(e.value)
    assert shell.user_ns["x"] == 20
