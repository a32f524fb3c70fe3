"""A kernel configured with several gateways (ARCHITECTURE.md, "Several gateways"), against two fake gateways: a hop
whose gateway dies before its cell started goes through the next one; one whose cell had started fails naming the
gateway, leaves the namespace alone, and the next hop goes through the other gateway. `%snapshot` and `%gpu usage`
fail over by the same rule (client/failover.py): past an unreachable gateway, a read also past a connection closed
mid-request, and a write never sent again once it may have reached a gateway."""

import pytest
from kernelhop_fake_gateway import USER, FakeGateway, send_json

from kernelhop.client.gateway import GatewayError
from kernelhop.client.snapshots import SnapshotError
from kernelhop.magics import snapshot


@pytest.fixture
def two(gateway_env, monkeypatch):
    """Gateway A (the conftest's) first, then B."""
    b = FakeGateway()
    monkeypatch.setenv("KERNELHOP_GATEWAY", f"{gateway_env.url},{b.url}")
    yield gateway_env, b
    b.close()


@pytest.fixture
def shell(two, shell):
    """The conftest's shell, made once both gateways are named, with %snapshot loaded too."""
    snapshot.load_ipython_extension(shell)
    yield shell
    snapshot.unload_ipython_extension(shell)


def saves(gw):
    """Let the fake answer what `%snapshot save` asks (it stores no snapshots itself)."""
    gw.answers.update(
        whoami=lambda msg: {"user": USER, "public_key": None},
        key_register=lambda msg: {},
        snapshot_save=lambda msg: {"snapshot": "5" * 64},
    )


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


def test_snapshot_list_goes_past_an_unreachable_gateway(shell, two, dead_url, monkeypatch, capsys):
    a, _ = two
    monkeypatch.setenv("KERNELHOP_GATEWAY", f"{dead_url},{a.url}")
    shell.run_line_magic("snapshot", "list")
    assert "snapshot_list" in a.ops()
    assert f"the gateway at {dead_url} is gone (unreachable); this %snapshot list goes on through {a.url}" in (
        capsys.readouterr().err
    )


def test_snapshot_save_goes_past_an_unreachable_gateway(shell, two, dead_url, monkeypatch, capsys):
    a, _ = two
    saves(a)
    monkeypatch.setenv("KERNELHOP_GATEWAY", f"{dead_url},{a.url}")
    shell.run_cell("x = 20")
    shell.run_line_magic("snapshot", "save first")
    out = capsys.readouterr()
    assert f"saved snapshot {'5' * 12} as first" in out.out
    assert f"the gateway at {dead_url} is gone (unreachable); this %snapshot save goes on through {a.url}" in out.err
    assert a.ops().count("snapshot_save") == 1 and a.put_digests, "the state's chunks went to the gateway that saved it"


def test_a_read_whose_connection_closes_is_sent_again_through_the_next_gateway(shell, two, capsys):
    a, b = two
    a.close_on = {"usage", "snapshot_list"}
    shell.run_line_magic("snapshot", "list")
    assert "snapshot_list" in b.ops()
    assert f"the gateway at {a.url} is gone (its connection closed); this %snapshot list goes on through {b.url}" in (
        capsys.readouterr().err
    )
    shell.run_line_magic("gpu", "usage")
    assert "GPU-seconds: 0.0 over 0 run(s)" in capsys.readouterr().out
    assert "usage" in b.ops() and "usage" not in a.ops(), "A went to the back of the list: B is asked first now"


def test_a_write_whose_connection_closes_is_not_sent_again(shell, two):
    a, b = two
    saves(a)
    saves(b)
    a.close_on = {"snapshot_save"}
    shell.run_cell("x = 20")
    with pytest.raises(SnapshotError) as e:
        shell.run_line_magic("snapshot", "save first")
    assert a.url in str(e.value) and "may have been done there, so it is not sent again" in str(e.value)
    assert "namespace is unchanged" in str(e.value)
    assert "snapshot_save" not in b.ops()
    assert shell.user_ns["x"] == 20


def test_a_background_hop_is_sent_past_an_unreachable_gateway(shell, two, dead_url, monkeypatch, capsys):
    a, _ = two
    monkeypatch.setenv("KERNELHOP_GATEWAY", f"{dead_url},{a.url}")
    shell.run_cell("x = 20")
    handle = shell.run_cell_magic("gpu", "h100 --background -q", "y = x + 1")
    handle.wait(60)
    assert shell.user_ns["y"] == 21 and len(runs(a)) == 1
    assert f"the gateway at {dead_url} is gone (unreachable); this hop goes on through {a.url}" in (
        capsys.readouterr().err
    )
