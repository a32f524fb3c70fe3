"""The `kernelhop` command with what a user has at hand: the gateway's URL as printed, the venv's own `kernelhop`
without the venv on PATH, and `kernelhop up` stopped in every way a user or a service manager stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from kernelhop_testing import launch_up, user_environment

from kernelhop.cli.services import RUNTIME_READY, ServiceError, runtime_token, start_gateway, start_service

KERNELHOP = Path(sys.executable).with_name("kernelhop")


def test_runtime_takes_the_gateway_url_and_this_installation_python(tmp_path: Path, make_kernel) -> None:
    user_env = user_environment()
    probe = subprocess.run(
        ["python3", "-c", "import kernelhop_worker"], env=user_env, stdin=subprocess.DEVNULL, capture_output=True
    )
    assert probe.returncode != 0, "python3 on the user's PATH must lack kernelhop for this test to mean anything"
    token = "firsthour-token"
    token_file = tmp_path / "runtime-token"
    gateway = start_gateway(
        data=tmp_path / "gateway", token=token, port=0, grpc_port=0, runtime_token_file=token_file, echo=None
    )
    try:
        # The URL exactly as the gateway prints it; the runtime learns the gRPC port from the gateway.
        command = [str(KERNELHOP), "runtime", "--gateway", gateway.ready["ws"], "--class", "firsthour"]
        command += ["--cache", str(tmp_path / "cache")]
        runtime = start_service(
            "runtime", command, RUNTIME_READY, env={**user_env, "KERNELHOP_TOKEN": runtime_token(token_file)}, echo=None
        )
        try:
            assert runtime.ready["gateway"] == gateway.ready["grpc"]
            said = "\n".join(runtime.lines)
            assert f"takes runtimes on its gRPC port {gateway.ready['grpc']}" in said
            kernel = make_kernel({**os.environ, "KERNELHOP_GATEWAY": gateway.ready["ws"], "KERNELHOP_TOKEN": token})
            run = kernel.run("%%gpu firsthour -q\nimport sys\nprint(sys.executable)")
            assert run.status == "ok", run.error_text + "\n" + "\n".join(runtime.lines[-20:])
            assert run.stream_text("stdout").strip() == sys.executable
        finally:
            runtime.stop()
    finally:
        gateway.stop()


def test_runtime_gateway_errors_say_what_to_pass(tmp_path: Path) -> None:
    env = {**os.environ, "KERNELHOP_TOKEN": "t"}
    bad = subprocess.run(
        [str(KERNELHOP), "runtime", "--gateway", "http://127.0.0.1:8731"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "expected the URL the gateway prints (ws://127.0.0.1:8731/ws/v1) or HOST:PORT" in bad.stderr
    # A URL where no gateway answers: the error names what it asked and the way around it.
    with pytest.raises(ServiceError) as nobody:
        start_service(
            "runtime",
            [str(KERNELHOP), "runtime", "--gateway", "ws://127.0.0.1:9/ws/v1", "--cache", str(tmp_path)],
            RUNTIME_READY,
            env=env,
            echo=None,
        )
    assert (
        "cannot learn the gRPC port of the gateway at ws://127.0.0.1:9/ws/v1 from http://127.0.0.1:9/runtimes/v1"
        in str(nobody.value)
    )
    assert "pass --gateway HOST:PORT of its gRPC port" in str(nobody.value)


def start_lab_kernel(lab: str, token: str) -> None:
    """A notebook's kernel, started as JupyterLab's frontend starts one. JupyterLab prints its address a moment
    before it accepts connections, so a refused connection is tried again."""
    start = urllib.request.Request(f"{lab}api/kernels?token={token}", data=b"{}", method="POST")
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(start, timeout=60) as answer:
                assert answer.status == 201
                return
        except urllib.error.URLError as e:
            if not isinstance(e.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP", "SIGINT", "SIGKILL"])
def test_up_takes_every_child_with_it(tmp_path: Path, stop: str) -> None:
    env = {**user_environment(), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime")}
    up = launch_up(KERNELHOP, tmp_path / "data", env=env)
    try:
        start_lab_kernel(up.ready["lab"], up.ready["lab_token"])
        children = psutil.Process(up.process.pid).children(recursive=True)
        commands = [" ".join(c.cmdline()) for c in children]
        parts = ("gateway/dist/src/main.js", "runtime/dist/src/main.js", "jupyterlab", "kernelhop_worker", "ipykernel")
        for part in parts:
            assert any(part in c for c in commands), f"no {part} among the children of kernelhop up: {commands}"
        up.process.send_signal(getattr(signal, stop))
        # SIGKILL leaves it no say: its children end by PR_SET_PDEATHSIG, their own children with them.
        up.process.wait(120)  # its stops are bounded (10 s each); a loaded CI machine is slow to reap
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"still running after kernelhop up got {stop}: {[p.cmdline() for p in alive]}"
    finally:
        up.stop()
