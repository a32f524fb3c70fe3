"""A hop against the fake gateway and worker, in a real IPython shell: what comes home, and what never changes."""

import os
import pkgutil
import re
import signal
import socket
import threading

import numpy as np
import pytest
from kernelhop_fake_gateway import send_json
from kernelhop_snapshot import Manifest, RemoteOnly, RemoteOnlyError, user_namespace

from kernelhop.client.gateway import GatewayError, GatewayUnreachable
from kernelhop.client.hop import RemoteCellError, RemoteResult


def state(ip):
    """Each user name and the identity of its object: equal states mean nothing was touched."""
    return {k: id(v) for k, v in user_namespace(ip).items()}


def hop(ip, code, line="h100"):
    return ip.run_cell_magic("gpu", line, code)


def test_changed_new_and_deleted_names_come_home(shell, capsys):
    shell.run_cell("x = 1\na = [1, 2]\nz = 'gone soon'\ncfg = {'lr': 0.1}")
    cfg = shell.user_ns["cfg"]
    hop(shell, "y = x + 1\na.append(3)\ndel z\nprint('from the gpu')")
    ns = shell.user_ns
    assert ns["y"] == 2 and ns["a"] == [1, 2, 3] and "z" not in ns
    assert ns["cfg"] is cfg  # an unchanged group is not brought home: local identity survives
    out, err = capsys.readouterr()
    assert "from the gpu\n" in out
    status = [line for line in err.splitlines() if line.startswith("[kernelhop]")]
    assert len(status) == 1
    assert status[0].startswith("[kernelhop] h100 on runtime fake-rt (simulated on CPU) · ")
    for part in ("capture", "upload", "queue", "remote", "home"):
        assert part in status[0]


def test_missing_blobs_sends_just_those_and_runs_again(shell, gateway):
    """A gateway that lost blobs the kernel took it to hold names them: the kernel sends those, no capture again."""
    shell.user_ns["big"] = np.arange(200_000)
    hop(shell, "n = 1")
    first = next(r for r in gateway.requests if r["op"] == "run")
    lost = [str(d) for d in Manifest.from_bytes(gateway.blobs[first["snapshot"]]).blob_digests()]
    for d in lost:
        del gateway.blobs[d]
    gateway.requests.clear()
    hop(shell, "n = len(big)")  # reaches big, so this hop read its buffers and holds its chunks
    assert shell.user_ns["n"] == 200_000
    runs = [r for r in gateway.requests if r["op"] == "run"]
    assert len(runs) == 2, gateway.ops()
    between = gateway.requests[gateway.requests.index(runs[0]) + 1 : gateway.requests.index(runs[1])]
    assert [r["op"] for r in between] == ["put_blobs"], gateway.ops()
    assert sorted(b["digest"] for b in between[0]["blobs"]) == sorted(lost)


def test_unchanged_array_keeps_its_identity(shell):
    shell.user_ns["keep"] = keep = np.arange(1000)
    hop(shell, "n = 1")
    assert shell.user_ns["keep"] is keep


def test_quiet_leaves_out_the_status_line(shell, capsys):
    shell.user_ns["x"] = 1
    hop(shell, "x += 1", "h100 --quiet")
    assert shell.user_ns["x"] == 2
    assert "[kernelhop]" not in capsys.readouterr().err


def test_result_is_the_cells_out(shell):
    result = hop(shell, "20 + 22")
    assert isinstance(result, RemoteResult)
    assert result._repr_mimebundle_() == ({"text/plain": "42"}, {})
    res = shell.run_cell("%%gpu h100 -q\n6 * 7")
    assert res.success and repr(res.result) == "42"


def test_functions_travel_both_ways(shell):
    shell.run_cell("def double(v):\n    return 2 * v\nfactor = 3")
    hop(shell, "def triple(v):\n    return factor * v\nr = double(5)")
    assert shell.user_ns["r"] == 10
    # A function made remotely looks its globals up in the kernel's namespace once home.
    shell.user_ns["factor"] = 4
    assert shell.user_ns["triple"](2) == 8


def test_unpicklable_stays_local_with_a_warning(shell, capsys, tmp_path):
    fh = open(tmp_path / "f.txt", "w")
    try:
        shell.user_ns.update(fh=fh, n=1)
        # The cell reaches fh (its name in a string) without touching it: warned about, as reached.
        hop(shell, "n = n + 1\nlabel = 'fh'")
        assert shell.user_ns["fh"] is fh and shell.user_ns["n"] == 2
        err = capsys.readouterr().err
        assert "kernelhop: variable 'fh' stays local: cannot pickle '_io.TextIOWrapper' object" in err
    finally:
        fh.close()


def test_remote_unpicklable_does_not_come_home(shell, capsys):
    hop(shell, "g = (i for i in range(3))\nok = 1")
    assert "g" not in shell.user_ns and shell.user_ns["ok"] == 1
    assert "kernelhop: variable 'g' did not come home:" in capsys.readouterr().err


def test_remote_exception_fails_the_cell_after_bringing_changes_home(shell, capsys):
    shell.user_ns["y"] = 0
    with pytest.raises(RemoteCellError) as e:
        hop(shell, "y = 5\n1 / 0")
    assert shell.user_ns["y"] == 5
    assert e.value.ename == "ZeroDivisionError"
    # The worker's own traceback, as IPython formats it there (colours stripped).
    assert "ZeroDivisionError" in re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(e.value._render_traceback_()))
    # Through run_cell the remote traceback is what the user sees, and the cell counts as failed.
    res = shell.run_cell("%%gpu h100 -q\nraise ValueError('bad value')")
    assert not res.success and isinstance(res.error_in_exec, RemoteCellError)
    shown = capsys.readouterr()
    assert "bad value" in re.sub(r"\x1b\[[0-9;]*m", "", shown.out + shown.err)


def assert_untouched(ip, before, values):
    assert state(ip) == before
    for k, v in values.items():
        assert ip.user_ns[k] == v


@pytest.fixture
def filled(shell):
    shell.user_ns.update(x=1, a=[1, 2], arr=np.ones(10))
    return state(shell), {"x": 1, "a": [1, 2]}


def test_unknown_class_leaves_namespace_and_lists_classes(shell, filled):
    before, values = filled
    with pytest.raises(GatewayError, match="available now: h100") as e:
        hop(shell, "x = 2\na.append(3)", "a100")
    assert e.value.code == "unknown_class"
    assert_untouched(shell, before, values)


def test_runtime_lost_leaves_namespace(shell, filled, gateway_env):
    before, values = filled
    gateway_env.script = "lost"
    with pytest.raises(GatewayError) as e:
        hop(shell, "x = 2\na.append(3)")
    assert e.value.code == "runtime_lost"
    assert_untouched(shell, before, values)


def test_corrupt_chunk_leaves_namespace(shell, filled, gateway_env):
    before, values = filled
    real_get = gateway_env._dispatch

    def corrupting(conn, msg, payload):
        if msg.get("op") == "get_blobs":
            for d in msg["digests"]:
                gateway_env.get_override[d] = b"x" * int(d.split("/")[1])
        real_get(conn, msg, payload)

    gateway_env._dispatch = corrupting
    with pytest.raises(GatewayError, match="arrived corrupt"):
        hop(shell, "x = 2\na.append(3)")
    assert_untouched(shell, before, values)


def test_what_cannot_be_rebuilt_here_stays_on_the_runtime_and_the_rest_comes_home(shell, filled, capsys):
    # An object that pickles on the worker but cannot be rebuilt here (as one from a module only the runtime has).
    code = (
        "def _explode():\n    raise RuntimeError('cannot rebuild here')\n"
        "class Boom:\n    def __reduce__(self):\n        return (_explode, ())\n"
        "thing = Boom()\nx = 2\n"
    )
    hop(shell, code)
    assert shell.user_ns["x"] == 2
    thing = shell.user_ns["thing"]
    assert isinstance(thing, RemoteOnly)  # its group: thing and the function its pickle calls
    with pytest.raises(RemoteOnlyError, match="'thing' .* lives on the runtime only: .*cannot rebuild here"):
        _ = thing.anything
    assert "variable 'thing' stays on the runtime" in capsys.readouterr().err
    # The kernel keeps that group's chunks: the next capture names them, and a gateway that lost them gets them again.
    hopper = shell.magics_manager.registry["GpuMagics"].hopper
    hopper.capturer.store = store = hopper.new_store()
    again = hopper.capturer.capture(user_namespace(shell))
    assert [g.names for g in hopper.capturer.remote_groups()] == [("_explode", "thing")]
    assert store.missing(again.manifest.blob_digests()) == []
    # Going back to a real runtime: tests/e2e/test_gpu_cell.py (this fake gateway rebuilds in this very process).


def test_unreachable_gateway_leaves_namespace(shell, filled, monkeypatch):
    before, values = filled
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KERNELHOP_GATEWAY", f"ws://127.0.0.1:{port}")
    with pytest.raises(GatewayUnreachable, match="kernelhop up"):
        hop(shell, "x = 2")
    assert_untouched(shell, before, values)


def test_interrupt_cancels_and_leaves_namespace(shell, filled, gateway_env):
    before, values = filled
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            hop(shell, "x = 2\na.append(3)\nimport time\ntime.sleep(60)")
    finally:
        timer.cancel()
    assert gateway_env.cancelled.is_set()
    assert_untouched(shell, before, values)
    # The kernel can hop again right after.
    hop(shell, "x = 3")
    assert shell.user_ns["x"] == 3


def test_second_hop_sends_only_what_changed(shell, gateway_env):
    shell.user_ns["big"] = np.random.default_rng(0).random(300_000)
    hop(shell, "n = 1")
    first = [b["digest"] for r in gateway_env.requests if r["op"] == "put_blobs" for b in r["blobs"]]
    assert sum(int(d.split("/")[1]) for d in first) > 2_400_000  # big's 2.4 MB went up once
    gateway_env.requests.clear()
    hop(shell, "n = 2")
    again = [b["digest"] for r in gateway_env.requests if r["op"] == "put_blobs" for b in r["blobs"]]
    # At most the small pickles of what changed and a new manifest: none of big's chunks again.
    assert all(int(d.split("/")[1]) < 64 * 1024 for d in again)
    assert shell.user_ns["n"] == 2


def test_a_group_out_of_reach_is_sent_unread_and_read_again_when_the_gateway_lost_it(shell, gateway_env):
    from kernelhop_snapshot import Capturer, MemoryBlobStore

    big = shell.user_ns["big"] = np.random.default_rng(1).random(300_000)
    hop(shell, "n = 1")
    big[0] = -5.0  # changed in place here; the next cell does not reach `big`
    gateway_env.requests.clear()
    hop(shell, "n = 2")
    sent = [b["digest"] for r in gateway_env.requests if r["op"] == "put_blobs" for b in r["blobs"]]
    assert all(int(d.split("/")[1]) < 64 * 1024 for d in sent), "big was read and sent though out of reach"
    # The gateway lost its chunks: the kernel cannot send the unread ones, so it reads everything and sends that.
    gateway_env.blobs.clear()
    hop(shell, "n = 3")
    fresh = Capturer(MemoryBlobStore()).capture({"big": big}).manifest.groups[0]
    assert all(str(d) in gateway_env.blobs for d in fresh.blob_digests())
    assert shell.user_ns["n"] == 3 and shell.user_ns["big"] is big


def test_stderr_and_display_events_are_relayed_in_order(shell, gateway_env, capsys):
    def runner(gw, conn, msg):
        rid = msg["id"]
        send_json(conn, {"re": rid, "event": "started", "runtime": "rt", "simulated": False})
        send_json(conn, {"re": rid, "event": "stream", "name": "stdout", "text": "one\n"})
        send_json(conn, {"re": rid, "event": "display", "data": {"text/plain": "<Figure two>"}, "metadata": {}})
        send_json(conn, {"re": rid, "event": "stream", "name": "stderr", "text": "three\n"})
        send_json(conn, {"re": rid, "event": "progress", "phase": "upload", "done_bytes": 1, "total_bytes": 2})
        send_json(conn, {"re": rid, "ok": True, "event": "done", "status": "ok", "snapshot": msg["snapshot"]})

    gateway_env.runner = runner
    shell.user_ns["x"] = 1
    assert hop(shell, "pass") is None
    out, err = capsys.readouterr()
    assert out.index("one") < out.index("<Figure two>")
    assert "three\n" in err and "[kernelhop] h100 on runtime rt ·" in err
    assert shell.user_ns["x"] == 1


@pytest.mark.parametrize(
    "etype", ["builtins:FileNotFoundError", "builtins:PermissionError", "builtins:UnicodeDecodeError", "builtins:KeyError"]
)
def test_a_remote_exception_of_a_builtin_with_its_own_constructor_keeps_its_class(etype: str) -> None:
    # OSError's subclasses refuse BaseException.__new__: they once came home as a bare RemoteCellError.
    from kernelhop.client.hop import RemoteCellError, remote_cell_error

    cls = pkgutil.resolve_name(etype)
    error = remote_cell_error("h100", {"ename": cls.__name__, "evalue": "why", "traceback": ["tb"], "etype": etype})
    assert isinstance(error, cls) and isinstance(error, RemoteCellError)
    assert str(error) == "why" and error.traceback == ["tb"]
