"""The `kernelhop` command: `up` (the embedded default), `gateway`, `runtime`, `snapshot` and `user`."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .installation import example_notebook
from .services import (
    ServiceError,
    ends_with_this_process,
    node_entry,
    runtime_sandbox,
    runtime_token,
    start_gateway,
    start_runtime,
    stop_process,
)
from .snapshot_parser import add_subcommands

EXAMPLE = "hello-gpu.ipynb"
NODE_SERVICES = ("gateway", "runtime")
# What stops `kernelhop up`: Ctrl-C, `kill`, `systemctl stop`, a closed terminal.
# SIGINT too: a process started in the background by a non-interactive shell inherits SIGINT ignored, and Python
# then raises no KeyboardInterrupt, so `kill -INT` would leave everything running.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class StopRequested(Exception):
    """A signal asked `kernelhop up` to stop: it unwinds like Ctrl-C, so every child is stopped on the way out."""


def _stop_requested(signum: int, _frame: object) -> None:
    raise StopRequested(signal.Signals(signum).name)


def kernelhop_home() -> Path:
    return Path(os.environ.get("KERNELHOP_HOME", Path.home() / ".kernelhop"))


def detect_gpu_classes() -> list[str]:
    """Names the runtime would find with nvidia-smi; empty on a host without NVIDIA GPUs."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def exec_node(package: str, args: list[str]) -> int:
    """Hand the process over to the Node service so signals and exit codes are its own."""
    command = node_entry(package) + args
    # A runtime's workers need this installation's packages (kernelhop_worker), which `python3` on PATH may lack
    # when the command is run as .venv/bin/kernelhop; KERNELHOP_PYTHON or --python still choose another.
    env = {**os.environ, "KERNELHOP_PYTHON": os.environ.get("KERNELHOP_PYTHON") or sys.executable}
    os.execve(command[0], command, env)
    return 0  # not reached: execve replaces this process


def cmd_up(ns: argparse.Namespace) -> int:
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _stop_requested)
    try:
        return _up(ns)
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)


def _up(ns: argparse.Namespace) -> int:
    home = Path(ns.data) if ns.data else kernelhop_home()
    home.mkdir(parents=True, exist_ok=True)
    token = os.environ.get("KERNELHOP_TOKEN") or secrets.token_urlsafe(24)
    classes = ns.gpu_class
    if not classes and not detect_gpu_classes():
        # A CPU-only machine poses as h100 so the example notebook runs; the runtime marks the class simulated and
        # every hop says so, so nobody mistakes it for a GPU.
        classes = ["cpu", "h100"]
        print("kernelhop: no NVIDIA GPU found here: the local runtime offers 'cpu' and 'h100' simulated on the CPU.")
    notebooks = Path(ns.notebook_dir) if ns.notebook_dir else home / "notebooks"
    notebooks.mkdir(parents=True, exist_ok=True)
    example = notebooks / EXAMPLE
    if not example.exists():
        shutil.copyfile(example_notebook(EXAMPLE), example)

    services = []
    lab: subprocess.Popen[bytes] | None = None
    try:
        grpc_port = ns.grpc_port if ns.grpc_port is not None else ns.port + 1
        token_file = home / "runtime-token"
        # The gateway stays on loopback whatever --host says: its kernels and runtime are here, and a browser elsewhere
        # reaches it through JupyterLab's relay, so it needs neither TLS nor an open port.
        gateway = start_gateway(
            data=home, token=token, host="127.0.0.1", port=ns.port, grpc_port=grpc_port, runtime_token_file=token_file
        )
        services.append(gateway)
        # The local runtime gets a runtime token of its own: the admin's never reaches a runtime or its workers.
        # One user: the runtime may run its workers unsandboxed, but only where this host cannot sandbox them.
        sandbox = runtime_sandbox(cache=home / "runtime-cache")
        if sandbox["sandbox"] == "none":
            print(f"kernelhop: the local runtime's workers run unsandboxed (one user only): {sandbox['detail']}")
        runtime = start_runtime(
            gateway=gateway.ready["grpc"],
            token=runtime_token(token_file),
            classes=classes,
            cache=home / "runtime-cache",
            extra=["--single-user"] if sandbox["sandbox"] == "none" else [],
        )
        services.append(runtime)
        env = {
            **os.environ,
            "KERNELHOP_GATEWAY": gateway.ready["ws"],
            "KERNELHOP_TOKEN": token,
            "KERNELHOP_HOME": str(home),
        }
        lab_args = [
            sys.executable,
            "-m",
            "jupyterlab",
            f"--ServerApp.root_dir={notebooks}",
            f"--ServerApp.port={ns.lab_port}",
            f"--ServerApp.ip={ns.host}",
            f"--LabApp.default_url=/lab/tree/{EXAMPLE}",
        ]
        if ns.no_browser:
            lab_args.append("--no-browser")
        if os.geteuid() == 0:
            lab_args.append("--allow-root")  # containers and CI run as root; JupyterLab refuses it otherwise
        print(
            f"kernelhop: gateway {gateway.ready['ws']}, runtime {runtime.ready['id']} ({runtime.ready['classes']}); "
            f"starting JupyterLab in {notebooks}",
            flush=True,  # before JupyterLab's own lines, which share the stream, when it is a pipe or a journal
        )
        lab = subprocess.Popen(lab_args, env=env, preexec_fn=ends_with_this_process())
        return lab.wait()
    except (KeyboardInterrupt, StopRequested):
        return 0
    except ServiceError as error:
        print(f"kernelhop up: {error}", file=sys.stderr)
        return 1
    finally:
        # A second signal must not cut the stopping short and leave children behind; each stop is bounded.
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)
        if lab is not None:
            stop_process(lab)  # JupyterLab shuts its kernels down on SIGTERM
        for service in reversed(services):
            service.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kernelhop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="gateway, one local runtime and JupyterLab with the example notebook")
    up.add_argument(
        "--host", default="127.0.0.1", help="address JupyterLab listens on (the gateway stays on loopback)"
    )
    up.add_argument("--port", type=int, default=8731, help="gateway WebSocket port")
    up.add_argument("--grpc-port", type=int, default=None, help="gateway gRPC port (default: port + 1)")
    up.add_argument("--lab-port", type=int, default=8888)
    up.add_argument("--data", help="gateway data directory (default $KERNELHOP_HOME or ~/.kernelhop)")
    up.add_argument("--notebook-dir", help="JupyterLab's root (default DATA/notebooks, seeded with the example)")
    up.add_argument(
        "--class",
        dest="gpu_class",
        action="append",
        default=[],
        metavar="NAME",
        help="classes the local runtime offers (default: its GPUs, or cpu and a simulated h100)",
    )
    up.add_argument("--no-browser", action="store_true")
    up.set_defaults(run=cmd_up)

    # Listed for --help only: main() hands their arguments to the Node services, which own their own --help.
    commands.add_parser(
        "gateway",
        help="run the gateway: [--host H] [--port P] [--grpc-port G] [--data DIR] [--tls auto] [--jupyterhub] "
        "[--store s3://BUCKET/PREFIX [--s3-endpoint URL]] [--metadata postgres://...] [--warm-grace S] "
        "[--liveness S]",
    )
    commands.add_parser(
        "runtime",
        help="run a runtime: --gateway URL|HOST:PORT [--token RUNTIME_TOKEN] [--class NAME ...] [--gpus N] [--python PATH]",
    )
    add_subcommands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in NODE_SERVICES:
            return exec_node(argv[0], argv[1:])
        ns = build_parser().parse_args(argv)
        return ns.run(ns)
    except ServiceError as error:
        print(f"kernelhop: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
