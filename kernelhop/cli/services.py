"""Start the Node services (gateway, runtime) as child processes and wait until they say they are ready.

`kernelhop up` and the end-to-end tests share this, so both start the stack exactly the same way.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .installation import InstallationError, node_command

GATEWAY_READY = re.compile(r"^kernelhop gateway ready ws=(?P<ws>\S+) grpc=(?P<grpc>\S+)")
RUNTIME_READY = re.compile(
    r"^kernelhop runtime ready id=(?P<id>\S+) classes=(?P<classes>\S*) capacity=(?P<capacity>\d+)"
    r"(?: gateway=(?P<gateway>\S+))?"
)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def ends_with_this_process() -> Callable[[], None] | None:
    """A `preexec_fn` that has Linux send the child SIGTERM when this process dies, however it dies (SIGKILL
    included), so no service outlives `kernelhop up` or a test. Linux ties this to the thread that starts the child,
    so only a child the main thread starts gets it; None elsewhere."""
    if _LIBC is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def in_child() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the prctl: nobody would send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ServiceError(RuntimeError):
    """A service could not be started; the message says what to do."""


def project_root() -> Path:
    """The checkout holding the Node packages: KERNELHOP_ROOT, or the folder above this package."""
    env = os.environ.get("KERNELHOP_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[2]
    if not (root / "gateway" / "package.json").exists():
        raise ServiceError(
            f"kernelhop's Node services are not in {root}. Run kernelhop from a checkout installed as the README "
            "says (pip install -e .), or set KERNELHOP_ROOT to that checkout."
        )
    return root


def node_entry(package: str) -> list[str]:
    """The command that runs a Node package's entry point: a checkout's build, or the bundle a wheel carries."""
    try:
        return node_command(package)
    except InstallationError as error:
        raise ServiceError(str(error)) from None


@dataclass
class Service:
    """A child process whose output is relayed line by line, with the fields of its ready line."""

    name: str
    process: subprocess.Popen[str]
    ready: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)


def start_service(
    name: str,
    command: list[str],
    ready: re.Pattern[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    echo: IO[str] | None = sys.stdout,
) -> Service:
    """Start `command`, relay its output prefixed with its name, and return once a line matches `ready`."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env=env,
        preexec_fn=ends_with_this_process(),
    )
    service = Service(name, process)
    seen = threading.Event()

    def relay(stream: IO[str], on_line: Callable[[str], None]) -> None:
        for line in stream:
            on_line(line.rstrip("\n"))

    def on_line(line: str) -> None:
        service.lines.append(line)
        if echo is not None:
            print(f"[{name}] {line}", file=echo, flush=True)
        match = ready.match(line)
        if match and not seen.is_set():
            service.ready = match.groupdict()
            seen.set()

    assert process.stdout is not None
    threading.Thread(target=relay, args=(process.stdout, on_line), daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while not seen.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(service.lines[-20:])
                why = (
                    f"exited with code {process.returncode}"
                    if process.returncode is not None
                    else f"was not ready in {timeout:.0f} s"
                )
                raise ServiceError(f"the {name} {why}:\n{tail}")
    except BaseException:  # not ready, or stopped while waiting (a signal, Ctrl-C): it must not run on alone
        service.stop()
        raise
    return service


def start_gateway(
    *,
    data: Path,
    token: str,
    host: str = "127.0.0.1",
    port: int = 8731,
    grpc_port: int | None = None,
    runtime_token_file: Path | None = None,
    extra: list[str] | None = None,
    echo: IO[str] | None = sys.stdout,
) -> Service:
    """The gateway, with `token` as the admin's; with `runtime_token_file`, it writes there a runtime token for a
    runtime on this host (`runtime_token` reads it), so that runtime never holds the admin's token. `extra` are more
    gateway options (--store, --metadata, ...)."""
    command = node_entry("gateway") + ["--host", host, "--port", str(port), "--data", str(data)]
    if grpc_port is not None:
        command += ["--grpc-port", str(grpc_port)]
    if runtime_token_file is not None:
        command += ["--runtime-token-file", str(runtime_token_file)]
    command += extra or []
    return start_service("gateway", command, GATEWAY_READY, env={**os.environ, "KERNELHOP_TOKEN": token}, echo=echo)


def runtime_token(file: Path) -> str:
    """The runtime token a gateway started with `runtime_token_file` wrote (before it said it was ready)."""
    return file.read_text(encoding="utf-8").strip()


def start_runtime(
    *,
    gateway: str,
    token: str,
    classes: list[str] | None = None,
    capacity: int | None = None,
    cache: Path | None = None,
    python: str = sys.executable,
    extra: list[str] | None = None,
    echo: IO[str] | None = sys.stdout,
    prefix: list[str] | None = None,
) -> Service:
    """`prefix`: a command the runtime runs under (a test's mount namespace, say)."""
    command = (prefix or []) + node_entry("runtime") + ["--gateway", gateway, "--python", python]
    for name in classes or []:
        command += ["--class", name]
    if capacity is not None:
        command += ["--capacity", str(capacity)]
    if cache is not None:
        command += ["--cache", str(cache)]
    command += extra or []
    # `token` is a runtime token; whatever KERNELHOP_TOKEN this process has (the admin's, say) is replaced by it.
    return start_service("runtime", command, RUNTIME_READY, env={**os.environ, "KERNELHOP_TOKEN": token}, echo=echo)


def runtime_sandbox(*, cache: Path, python: str = sys.executable) -> dict[str, str]:
    """Whether a runtime could sandbox its workers here: {"sandbox": "uid" | "userns" | "none", "detail": why}."""
    command = node_entry("runtime") + ["--probe-sandbox", "--python", python, "--cache", str(cache)]
    probe = subprocess.run(command, capture_output=True, text=True, timeout=60)
    try:
        return dict(json.loads(probe.stdout))
    except ValueError:
        return {"sandbox": "none", "detail": f"the runtime's sandbox probe failed: {probe.stderr.strip()}"}
