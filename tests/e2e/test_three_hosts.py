"""Three hosts on this machine, made with network namespaces: a kernel host and a runtime host, each joined to the
gateway host by a veth pair (the gateway host sits between them, so kernel and runtime share no link). The gateway
binds all its addresses with `--tls auto`; the runtime verifies it with the CA file, the kernel by the pinned
fingerprint. A raw socket on the gateway host sees every TCP byte: all of it must be TLS records, and no token or
cell value may appear in clear. Then the kernel's link is cut (`ip link set down`) while a large state uploads: the
hop fails with a clear error, the kernel keeps its state, and once the link is back the next hop works.

Needs root and `ip netns` (iproute2), as CI has; it fails saying so where they are missing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelhop.cli.services import GATEWAY_READY, RUNTIME_READY, Service, node_entry, start_service

HERE = Path(__file__).resolve().parent
FINGERPRINT = re.compile(r"^kernelhop gateway TLS certificate sha256 (?P<fp>[0-9A-F:]{95})")
PORT, GRPC_PORT = 8731, 8732
# The kernel's uplink is shaped so the large state takes seconds to cross (the cut must land mid-transfer), and so the
# raw-socket capture keeps up on a busy CI machine.
KERNEL_RATE, RUNTIME_RATE = "160mbit", "320mbit"
BIG_BYTES = 120_000_000
CUT_AFTER_BYTES = 25_000_000


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and run.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({run.returncode}): {run.stderr.strip()}")
    return run


def need_netns() -> None:
    if os.geteuid() != 0:
        pytest.fail("the three-host test needs root to make network namespaces (CI runs as root)")
    if shutil.which("ip") is None or sh("ip", "netns", "list", check=False).returncode != 0:
        pytest.fail("the three-host test needs `ip netns` (Debian's iproute2: apt-get install -y iproute2)")
    if shutil.which("tc") is None:
        pytest.fail("the three-host test needs `tc` (Debian's iproute2) to slow the kernel's link")


class Hosts:
    """kernel ─ kk{n} ═ gk{n} ─ gateway ─ gr{n} ═ rr{n} ─ runtime, each a network namespace."""

    def __init__(self) -> None:
        n = os.getpid() % 10000
        octet = 100 + os.getpid() % 150
        self.kernel, self.gateway, self.runtime = f"khk{n}", f"khg{n}", f"khr{n}"
        self.kernel_dev, self.runtime_dev = f"kk{n}", f"rr{n}"
        self.gateway_kernel_dev, self.gateway_runtime_dev = f"gk{n}", f"gr{n}"
        self.gateway_ip_for_kernel, self.kernel_ip = f"10.{octet}.1.1", f"10.{octet}.1.2"
        self.gateway_ip_for_runtime, self.runtime_ip = f"10.{octet}.2.1", f"10.{octet}.2.2"

    def create(self) -> None:
        for ns in (self.kernel, self.gateway, self.runtime):
            sh("ip", "netns", "add", ns)
            self.exec_(ns, "ip", "link", "set", "lo", "up")
        for outer, inner, ns, outer_ip, inner_ip in [
            (self.gateway_kernel_dev, self.kernel_dev, self.kernel, self.gateway_ip_for_kernel, self.kernel_ip),
            (self.gateway_runtime_dev, self.runtime_dev, self.runtime, self.gateway_ip_for_runtime, self.runtime_ip),
        ]:
            sh("ip", "link", "add", outer, "netns", self.gateway, "type", "veth", "peer", "name", inner, "netns", ns)
            self.exec_(self.gateway, "ip", "addr", "add", f"{outer_ip}/24", "dev", outer)
            self.exec_(self.gateway, "ip", "link", "set", outer, "up")
            self.exec_(ns, "ip", "addr", "add", f"{inner_ip}/24", "dev", inner)
            self.exec_(ns, "ip", "link", "set", inner, "up")
        self.exec_(
            self.kernel,
            "tc",
            "qdisc",
            "add",
            "dev",
            self.kernel_dev,
            "root",
            "tbf",
            "rate",
            KERNEL_RATE,
            "burst",
            "256kb",
            "latency",
            "400ms",
        )
        self.exec_(
            self.gateway,
            "tc",
            "qdisc",
            "add",
            "dev",
            self.gateway_runtime_dev,
            "root",
            "tbf",
            "rate",
            RUNTIME_RATE,
            "burst",
            "256kb",
            "latency",
            "400ms",
        )

    def exec_(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *args, check=check)

    def rx_bytes(self, ns: str, dev: str) -> int:
        return int(self.exec_(ns, "cat", f"/sys/class/net/{dev}/statistics/rx_bytes").stdout)

    def destroy(self) -> None:
        # Deleting a namespace deletes the veth ends in it, and with them their peers.
        for ns in (self.kernel, self.gateway, self.runtime):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    need_netns()
    h = Hosts()
    h.destroy()  # a namespace left by a killed earlier run with this pid
    try:
        h.create()
        yield h
    finally:
        h.destroy()


class KernelHost:
    """kernel_host.py inside the kernel's namespace: one cell a line, one JSON answer a line."""

    def __init__(self, ns: str, env: dict[str, str], log: Path) -> None:
        self.log = log.open("w")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(HERE / "kernel_host.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        assert self.answer(120)["status"] == "ready"

    def send(self, code: str, timeout: float = 300) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"code": code, "timeout": timeout}) + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float) -> dict[str, str]:
        assert self.process.stdout is not None
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError(f"the kernel host did not answer in {timeout:.0f} s; see {self.log.name}")
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the kernel host exited ({self.process.poll()}); see {self.log.name}")
        return json.loads(line)

    def run(self, code: str, timeout: float = 300) -> dict[str, str]:
        self.send(code, timeout)
        return self.answer(timeout + 30)

    def value(self, expression: str) -> str:
        got = self.run(f"print(repr({expression}))")
        assert got["status"] == "ok", got["error"]
        return got["stdout"].strip()

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def in_ns(ns: str, command: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *command]


# Three processes per host start on a shared machine, and the cut waits out the kernel's 30 s of unacknowledged data.
@pytest.mark.timeout(600)
def test_three_hosts_every_byte_over_tls_and_a_cut_link_mid_transfer(hosts: Hosts, tmp_path: Path) -> None:
    admin_token = secrets.token_hex(16)
    canary = f"kh-canary-{secrets.token_hex(8)}"
    gateway_data = tmp_path / "gateway-host"
    started: list[Service] = []
    sniffer: subprocess.Popen[str] | None = None
    kernel: KernelHost | None = None
    capture = tmp_path / "capture.json"
    try:
        # The gateway host: all its addresses, TLS made here; no plain-text port anywhere.
        command = node_entry("gateway") + ["--host", "0.0.0.0", "--tls", "auto", "--port", str(PORT)]
        command += [
            "--grpc-port",
            str(GRPC_PORT),
            "--data",
            str(gateway_data),
        ]
        refused = hosts.exec_(
            hosts.gateway, *node_entry("gateway"), "--host", "0.0.0.0", "--data", str(tmp_path / "plain"), check=False
        )
        assert refused.returncode == 2 and "without TLS" in refused.stderr and "--tls auto" in refused.stderr
        gateway = start_service(
            "gateway",
            in_ns(hosts.gateway, command),
            GATEWAY_READY,
            env={**os.environ, "KERNELHOP_TOKEN": admin_token},
            echo=None,
        )
        started.append(gateway)
        fingerprint = next(m["fp"] for m in map(FINGERPRINT.match, gateway.lines) if m)
        # The operator makes the GPU host's token with `kernelhop` on the gateway host, which finds the gateway (on
        # loopback, verified by its CA) and the admin's token in the data directory.
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELHOP_")}
        cli_env["KERNELHOP_HOME"] = str(gateway_data)
        created = subprocess.run(
            in_ns(hosts.gateway, [sys.executable, "-m", "kernelhop.cli", "runtime-token", "create", "--class", "h100"]),
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        assert json.loads((gateway_data / "gateway.json").read_text())["url"] == f"wss://127.0.0.1:{PORT}/ws/v1"
        runtime_token = created.stdout.splitlines()[-1]

        sniffer = subprocess.Popen(
            in_ns(
                hosts.gateway,
                [sys.executable, str(HERE / "tls_sniffer.py"), str(capture), admin_token, runtime_token, canary],
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "sniffing"

        # The runtime host has only the CA file, copied over as an operator would.
        runtime_host = tmp_path / "runtime-host"
        runtime_host.mkdir()
        shutil.copyfile(gateway_data / "tls" / "ca.pem", runtime_host / "gateway-ca.pem")
        runtime_command = node_entry("runtime") + [
            "--gateway",
            f"wss://{hosts.gateway_ip_for_runtime}:{PORT}/ws/v1",
            "--ca",
            str(runtime_host / "gateway-ca.pem"),
            "--class",
            "h100",
            "--python",
            sys.executable,
            "--cache",
            str(runtime_host / "cache"),
        ]
        runtime = start_service(
            "runtime",
            in_ns(hosts.runtime, runtime_command),
            RUNTIME_READY,
            env={**os.environ, "KERNELHOP_TOKEN": runtime_token},
            echo=None,
        )
        started.append(runtime)

        # The kernel host pins the fingerprint the gateway printed; it has no file of the gateway's.
        kernel_env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELHOP_")}
        kernel_env.update(
            KERNELHOP_GATEWAY=f"wss://{hosts.gateway_ip_for_kernel}:{PORT}/ws/v1",
            KERNELHOP_TOKEN=admin_token,
            KERNELHOP_FINGERPRINT=fingerprint,
            KERNELHOP_HOME=str(tmp_path / "kernel-host"),
        )
        kernel = KernelHost(hosts.kernel, kernel_env, tmp_path / "kernel-host.log")
        assert kernel.run(f"x = 20\nsecret = {canary!r}")["status"] == "ok"
        hop = kernel.run("%%gpu h100 -q\ny = x + 1\nprint(secret)")
        assert hop["status"] == "ok", hop["error"]
        assert canary in hop["stdout"]
        assert kernel.value("y") == "21"

        # A large state, cut off mid-upload.
        ok = kernel.run(
            f"import numpy as np\nbig = np.random.default_rng(7).integers(0, 256, {BIG_BYTES}, dtype=np.uint8)"
        )
        assert ok["status"] == "ok", ok["error"]
        before = hosts.rx_bytes(hosts.gateway, hosts.gateway_kernel_dev)
        kernel.send("%%gpu h100 -q\nbig_sum = int(big.sum())\nx = -1", timeout=300)
        deadline = time.monotonic() + 120
        while hosts.rx_bytes(hosts.gateway, hosts.gateway_kernel_dev) - before < CUT_AFTER_BYTES:
            assert time.monotonic() < deadline, "the large state never started crossing the kernel's link"
            time.sleep(0.1)
        hosts.exec_(hosts.kernel, "ip", "link", "set", hosts.kernel_dev, "down")
        crossed = hosts.rx_bytes(hosts.gateway, hosts.gateway_kernel_dev) - before
        assert crossed < BIG_BYTES, f"the cut came after the whole state had crossed ({crossed} bytes)"
        cut = kernel.answer(240)
        assert cut["status"] == "error"
        assert "connection to the gateway" in cut["error"] and "local namespace is unchanged" in cut["error"], cut[
            "error"
        ]

        hosts.exec_(hosts.kernel, "ip", "link", "set", hosts.kernel_dev, "up")
        assert kernel.value("x") == "20"
        assert kernel.value("'big_sum' in globals()") == "False"
        assert kernel.value("(int(big[:1000].sum()), big.nbytes)") == repr((int(_expected_head_sum()), BIG_BYTES))
        again = kernel.run("%%gpu h100 -q\nbig_sum = int(big[:1000].sum())\nx = x + 1", timeout=300)
        assert again["status"] == "ok", again["error"]
        assert kernel.value("x") == "21"
        assert kernel.value("big_sum") == str(_expected_head_sum())
    finally:
        if kernel is not None:
            kernel.stop()
        for service in reversed(started):
            service.stop()
        if sniffer is not None:
            sniffer.send_signal(signal.SIGTERM)
            sniffer.wait(timeout=60)

    summary = json.loads(capture.read_text())
    assert summary["secrets_in_clear"] == []
    connections = summary["directions"]
    ports = {int(k.split(">")[1].rsplit(":", 1)[1]) for k in connections} | {
        int(k.split(">")[0].rsplit(":", 1)[1]) for k in connections
    }
    assert {PORT, GRPC_PORT} <= ports, f"no traffic seen on both listeners: {sorted(connections)}"
    carried = 0
    for key, d in connections.items():
        if d["tls_bytes"] == 0 and d["not_tls"] is None:
            continue  # no payload that way (a bare ACK stream)
        assert d["not_tls"] is None, f"{key} carried bytes that are not TLS records: {d['not_tls']}"
        assert d["first_type"] == 22, f"{key} did not begin with a TLS handshake: {d}"
        carried += d["tls_bytes"]
    assert carried > CUT_AFTER_BYTES, f"only {carried} TLS bytes seen: the capture missed the transfers"


def _expected_head_sum() -> int:
    import numpy as np

    return int(np.random.default_rng(7).integers(0, 256, BIG_BYTES, dtype=np.uint8)[:1000].sum())


def test_the_capture_tells_tls_from_plain_text_and_reassembles_out_of_order() -> None:
    sys.path.insert(0, str(HERE))
    from tls_sniffer import Direction

    record = bytes([22, 3, 3, 0, 4]) + b"abcd" + bytes([23, 3, 3, 0, 2]) + b"ef"
    tls = Direction()
    tls.segment(999, b"", syn=True)
    tls.segment(1000 + 7, record[7:], syn=False)  # arrives first, held until the gap fills
    tls.segment(1000, record[:7], syn=False)
    tls.segment(1000, record[:7], syn=False)  # a retransmission
    assert (tls.records, tls.first_type, tls.tls_bytes, tls.not_tls) == (2, 22, len(record), None)
    plain = Direction()
    plain.segment(5, b"GET /ws/v1 HTTP/1.1\r\n", syn=False)
    assert plain.not_tls is not None and plain.records == 0
