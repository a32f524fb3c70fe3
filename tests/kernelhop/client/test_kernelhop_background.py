"""A background hop (`%%gpu CLASS --background`) against the fake gateway and the real worker, in a real IPython
shell: what is applied when, what is refused, and what stays untouched. The fake's run waits on a gate the test
opens, so "the kernel changed a name while the hop ran" happens in that order every time."""

from __future__ import annotations

import threading

import pytest
from kernelhop_fake_gateway import worker_runner

from kernelhop.client.background import BackgroundHopError
from kernelhop.client.gateway import KernelhopError
from kernelhop.client.hop import RemoteCellError


@pytest.fixture
def gate(gateway_env):
    """Runs wait until the test opens the gate."""
    opened = threading.Event()

    def gated(gw, conn, msg):
        opened.wait(60)
        worker_runner(gw, conn, msg)

    gateway_env.runner = gated
    yield opened
    opened.set()


def background(ip, code, line="h100 --background -q"):
    return ip.run_cell_magic("gpu", line, code)


def test_returns_a_handle_at_once_and_applies_before_the_next_cell(shell, gate):
    shell.run_cell("x = 41")
    handle = background(shell, "y = x + 1\ny")
    assert handle.status == "running" and "y" not in shell.user_ns
    gate.set()
    handle._finished.wait(60)
    assert "y" not in shell.user_ns, "nothing is applied inside a cell"
    shell.run_cell("z = y * 2")  # pre_run_cell applies it first
    assert shell.user_ns["z"] == 84 and handle.status == "applied" and handle.applied == ["y"]
    assert repr(handle.result) == "42"


def test_names_changed_here_since_the_hop_started_are_refused_and_kept(shell, gate):
    shell.run_cell("a = 1\nb = [1]\nshared = [0]\nalias = shared\nuntouched = 'same'")
    handle = background(shell, "a = 10\nb.append(2)\nshared.append(1)\nc = 3")
    # While it runs, this kernel rebinds `a` and changes `alias` (so the group of `shared`) in place.
    shell.run_cell("a = 5\nalias.append(-1)")
    gate.set()
    result = handle.wait(60)
    assert result is None
    assert shell.user_ns["a"] == 5, "this kernel's value stays"
    assert shell.user_ns["shared"] == [0, -1] and shell.user_ns["alias"] is shell.user_ns["shared"]
    assert shell.user_ns["b"] == [1, 2] and shell.user_ns["c"] == 3, "the rest is applied"
    assert sorted(handle.refused) == ["a", "alias", "shared"]
    assert handle.refused["a"] == 10 and handle.refused["shared"] == [0, 1]
    assert handle.refused["alias"] is handle.refused["shared"], "the refused group keeps its sharing"


def test_a_remote_error_comes_home_with_what_it_changed_and_wait_raises_it(shell, gate):
    handle = background(shell, "made = 1\nraise ValueError('boom')")
    gate.set()
    with pytest.raises(ValueError, match="boom") as e:
        handle.wait(60)
    assert isinstance(e.value, RemoteCellError)
    assert shell.user_ns["made"] == 1


def test_another_hop_waits_for_the_background_one_and_cancel_applies_nothing(shell, gate):
    shell.run_cell("x = 1")
    handle = background(shell, "x = 2")
    with pytest.raises(KernelhopError, match=r"background hop on h100 .* is running.*%gpu cancel"):
        shell.run_cell_magic("gpu", "h100 -q", "x = 3")
    handle.cancel()
    assert handle.status == "cancelled" and shell.user_ns["x"] == 1
    with pytest.raises(BackgroundHopError, match="cancelled; nothing applied"):
        handle.wait(1)
    shell.run_cell("pass")
    assert shell.user_ns["x"] == 1
    # The kernel hops again at once.
    gate.set()
    shell.run_cell_magic("gpu", "h100 -q", "x = 4")
    assert shell.user_ns["x"] == 4
