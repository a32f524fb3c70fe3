"""`kernelhop snapshot`/`user`/`usage` with several gateways named (KERNELHOP_GATEWAY="A,B"): the kernel's failover
rule (client/failover.py) against fake gateways, the first of them gone."""

import pytest
from kernelhop_fake_gateway import FakeGateway

from kernelhop.cli.main import main


@pytest.fixture
def dead_first(gateway_env, dead_url, monkeypatch):
    monkeypatch.setenv("KERNELHOP_GATEWAY", f"{dead_url},{gateway_env.url}")
    return dead_url, gateway_env


@pytest.mark.parametrize(
    ("argv", "op", "said"),
    [
        (["snapshot", "ls"], "snapshot_list", "`kernelhop snapshot ls`"),
        (["usage"], "usage", "`kernelhop usage`"),
        (["snapshot", "revoke", "s1"], "snapshot_revoke", "`kernelhop snapshot revoke`"),
    ],
)
def test_a_command_goes_past_an_unreachable_gateway(dead_first, capsys, argv, op, said):
    dead, a = dead_first
    a.answers["snapshot_revoke"] = lambda msg: {}  # a write: it never reached the dead gateway, so it may go on
    assert main(argv) == 0
    assert op in a.ops()
    assert f"the gateway at {dead} is gone (unreachable); this {said} goes on through {a.url}" in capsys.readouterr().err


def test_a_read_is_sent_again_after_a_close_and_a_write_is_not(gateway_env, monkeypatch, capsys):
    a, b = gateway_env, FakeGateway()
    try:
        monkeypatch.setenv("KERNELHOP_GATEWAY", f"{a.url},{b.url}")
        a.close_on = {"user_list", "user_rm"}
        for gw in (a, b):
            gw.answers.update(user_list=lambda msg: {"users": []}, user_rm=lambda msg: {})
        assert main(["user", "ls"]) == 0
        assert "user_list" in b.ops()
        assert main(["user", "rm", "bob"]) == 1
        err = capsys.readouterr().err
        assert "closed before it answered `kernelhop user rm`; it may have been done there" in err
        assert "nothing here changed" in err
        assert "user_rm" not in b.ops()
    finally:
        b.close()
