"""A local kernelhop stack (real gateway and runtime processes on loopback) and a real ipykernel driven through
jupyter_client: shared by the end-to-end tests and the benchmarks."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kernelhop.cli.services import Service, runtime_token, start_gateway, start_runtime, start_service

# JupyterLab's address with its token, printed once it serves; `kernelhop up` starts it last, so all is up by then.
LAB_READY = re.compile(r".*?(?P<lab>http://127\.0\.0\.1:\d+/)\S*\?token=(?P<lab_token>\w+)")
UP_STARTED = re.compile(r"^kernelhop: gateway (?P<ws>\S+), runtime (?P<runtime>\S+) ")


@dataclass
class Stack:
    gateway: Service
    runtime: Service
    token: str
    data: Path

    @property
    def ws_url(self) -> str:
        return self.gateway.ready["ws"]

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            **os.environ,
            "KERNELHOP_GATEWAY": self.ws_url,
            "KERNELHOP_TOKEN": self.token,
            "KERNELHOP_HOME": str(self.data),
        }
        env.update(overrides)
        return env

    def stop(self) -> None:
        self.runtime.stop()
        self.gateway.stop()

    def admin_op(self, op: str, **fields: object) -> dict[str, Any]:
        """One WebSocket op as the stack's admin (user_add, user_rm, ...), on a connection of its own."""
        from kernelhop.client.gateway import GatewayConnection

        client = GatewayConnection(self.ws_url, self.token, source="the test's admin token")
        try:
            reply, _ = client._op(op, **fields)
            return reply
        finally:
            client.close()


# A runtime under this prefix sees the directory named after it as an empty tmpfs: "another host's" disk.
CAN_HIDE = os.geteuid() == 0 and shutil.which("unshare") is not None


def hiding(directory: Path) -> list[str]:
    """The command prefix (root and unshare: CAN_HIDE) that runs a command in a mount namespace of its own where
    ``directory`` is an empty tmpfs."""
    hide = 'mount -t tmpfs tmpfs "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", hide, str(directory)]


@dataclass(frozen=True)
class StoredBlob:
    """Where the gateway's directory store keeps a blob: `size` bytes from `offset` of `file` (a pack, or a file of
    its own as stores written before packs have)."""

    file: Path
    offset: int
    size: int

    def read(self) -> bytes:
        with self.file.open("rb") as f:
            f.seek(self.offset)
            return f.read(self.size)

    def overwrite(self, data: bytes) -> None:
        """Replaces the blob's bytes in place with as many others, as a damaged disk would."""
        assert len(data) == self.size
        self.file.chmod(0o644)
        with self.file.open("r+b") as f:
            f.seek(self.offset)
            f.write(data)


PACK_MAGIC = b"KHPACK1\n"


def pack_entries(pack: Path) -> dict[str, StoredBlob]:
    """A pack's blobs by hash, from its trailer (gateway/src/stores/packs.ts): entries of hash, offset and size
    (u64 LE), their count (u32 LE) and the magic."""
    data = pack.read_bytes()
    assert data.endswith(PACK_MAGIC), f"{pack} does not end as a pack does"
    count = int.from_bytes(data[-12:-8], "little")
    start = len(data) - 12 - 48 * count
    out = {}
    for at in range(start, start + 48 * count, 48):
        out[data[at : at + 32].hex()] = StoredBlob(
            pack, int.from_bytes(data[at + 32 : at + 40], "little"), int.from_bytes(data[at + 40 : at + 48], "little")
        )
    return out


def stored_blobs(cas: Path) -> dict[str, StoredBlob]:
    """Every blob on the directory store's disk, read behind its back as a crash would leave it."""
    found = {p.name: StoredBlob(p, 0, p.stat().st_size) for p in cas.glob("[0-9a-f][0-9a-f]/*") if len(p.name) == 64}
    for pack in sorted((cas / "packs").glob("*.pack")):
        for h, where in pack_entries(pack).items():
            found.setdefault(h, where)
    return found


def bytes_moved(ws_url: str, token: str, link: str, direction: str) -> float:
    """The kernelhop_bytes_total for ``link`` and ``direction`` on the /metrics of the gateway at ``ws_url``, read
    with its admin ``token`` (0 before any)."""
    url = ws_url.replace("ws://", "http://").replace("/ws/v1", "/metrics")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    text = urllib.request.urlopen(request, timeout=10).read().decode()
    m = re.search(rf'^kernelhop_bytes_total\{{link="{link}",direction="{direction}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def launch_stack(
    root: Path,
    *,
    capacity: int = 2,
    classes: list[str] | None = None,
    echo: IO[str] | None = None,
    python: str = sys.executable,
    runtime_extra: list[str] | None = None,
) -> Stack:
    """A gateway and one runtime under `root`; the runtime poses as h100 unless `classes` says otherwise ([] = its
    own GPUs, found with nvidia-smi), its workers run `python`, and `runtime_extra` are more runtime options."""
    token = secrets.token_hex(16)
    token_file = root / "runtime-token"
    gateway = start_gateway(
        data=root / "gateway", token=token, port=0, grpc_port=0, runtime_token_file=token_file, echo=echo
    )
    try:
        runtime = start_runtime(
            gateway=gateway.ready["grpc"],
            token=runtime_token(token_file),
            classes=["h100"] if classes is None else classes,
            capacity=capacity,
            cache=root / "runtime-cache",
            python=python,
            extra=runtime_extra,
            echo=echo,
        )
    except BaseException:
        gateway.stop()
        raise
    return Stack(gateway, runtime, token, root)


def local_distribution(site: Path, name: str, version: str) -> Path:
    """An installed distribution `name` of one empty module, in `site` (a directory for sys.path): one a kernel can
    import and record that no index has."""
    module = name.replace("-", "_")
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text("")
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    return site


def user_environment() -> dict[str, str]:
    """This process's environment as a user has it who runs a venv's `kernelhop` without activating the venv: this
    venv off PATH, and no KERNELHOP_* settings (a test harness sets them; `kernelhop up` must do without)."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELHOP_") and k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def launch_up(kernelhop: str | Path, data: Path, *, env: dict[str, str], timeout: float = 180) -> Service:
    """`kernelhop up` as a user starts it (no browser; free ports; the runtime posing as h100, whatever the host's
    GPUs), once its JupyterLab serves. Its `ready` holds the gateway's URL, the runtime's id, and JupyterLab's
    address and token."""
    command = [str(kernelhop), "up", "--no-browser", "--data", str(data), "--class", "h100"]
    command += ["--port", "0", "--grpc-port", "0", "--lab-port", "0"]
    up = start_service("kernelhop up", command, LAB_READY, env=env, timeout=timeout, echo=None)
    started = next((m for m in map(UP_STARTED.match, up.lines) if m), None)
    if started is None:
        up.stop()
        raise AssertionError("kernelhop up did not say where its gateway is:\n" + "\n".join(up.lines[-20:]))
    up.ready.update(started.groupdict())
    return up


@dataclass
class Execution:
    """What one execute request produced: the reply and every iopub message with its arrival time."""

    reply: dict[str, Any]
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    finished_at: float = 0.0

    @property
    def status(self) -> str:
        return self.reply["content"]["status"]

    def stream_text(self, name: str | None = None) -> str:
        return "".join(
            m["content"]["text"]
            for _, m in self.messages
            if m["msg_type"] == "stream" and (name is None or m["content"]["name"] == name)
        )

    def outputs(self, msg_type: str) -> list[dict[str, Any]]:
        return [m["content"] for _, m in self.messages if m["msg_type"] == msg_type]

    @property
    def error_text(self) -> str:
        errors = self.outputs("error")
        return "\n".join("\n".join(e["traceback"]) + f"\n{e['ename']}: {e['evalue']}" for e in errors)


class Kernel:
    """A real ipykernel driven through jupyter_client, with kernelhop loaded."""

    def __init__(
        self, env: dict[str, str], cwd: str | os.PathLike[str] | None = None, kernel_name: str = "python3"
    ) -> None:
        # Imported here: scripts/gpu_check.py uses launch_stack on GPU hosts that have no Jupyter.
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name=kernel_name)
        # A directory of its own unless told: hops carry the kernel's working directory (files.py), and the
        # test's own (the repository) is not what a cell should get.
        self._own_cwd = None if cwd is not None else tempfile.TemporaryDirectory(prefix="kernelhop-kernel-")
        self.cwd = os.fspath(cwd) if cwd is not None else self._own_cwd.name  # type: ignore[union-attr]
        self.manager.start_kernel(env=env, cwd=self.cwd)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        first = self.run("%load_ext kernelhop")
        assert first.status == "ok", first.error_text

    def run(
        self, code: str, timeout: float = 120, on_message: Callable[[dict[str, Any]], None] | None = None
    ) -> Execution:
        execution = Execution(reply={})

        def hook(msg: dict[str, Any]) -> None:
            execution.messages.append((time.monotonic(), msg))
            if on_message is not None:
                on_message(msg)

        execution.reply = self.client.execute_interactive(code, output_hook=hook, timeout=timeout, allow_stdin=False)
        execution.finished_at = time.monotonic()
        return execution

    def value(self, expression: str) -> Any:
        execution = self.run(f"print(repr({expression}))")
        assert execution.status == "ok", execution.error_text
        return execution.stream_text("stdout").strip()

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
        if self._own_cwd is not None:
            self._own_cwd.cleanup()
