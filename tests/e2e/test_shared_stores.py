"""A `%%gpu` hop with the gateway past one disk: metadata in a real PostgreSQL (Debian's, initdb'd here) and blobs in
an S3-compatible store (moto's standalone server, from the test extra), both started by this test on loopback. The
runtime fetches the run's chunks straight from the store by presigned URLs: moto's request recorder shows them.
Users, runtime tokens and usage live in the same Postgres, so a second gateway on it serves what the first made.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelhop.cli.services import Service, runtime_token, start_gateway, start_runtime, stop_process
from kernelhop_testing import Kernel, Stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL server in a temporary directory; as root (CI), run as the postgres user, as initdb requires
    (in a directory of its own under /tmp: pytest's are root's alone)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install -y postgresql (scripts/test.sh does so as root)")
    bin_dir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="kernelhop-pg-"))
    as_user: list[str] = []
    if os.getuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, cwd=root)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "kernelhop", "-A", "trust", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            yield f"postgres://kernelhop@127.0.0.1:{port}/postgres"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def psql(url: str, sql: str) -> str:
    psql_bin = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
    return subprocess.run([psql_bin, url, "-At", "-c", sql], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """moto_server on loopback recording every request (to a file), with a bucket; AWS_* set as a deployment sets them."""
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.fail('moto_server is not installed: pip install -e ".[test]" (it brings moto[server])')
    port, recording = free_port(), tmp_path / "s3-requests.jsonl"
    env = {**os.environ, "MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(recording)}
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on {endpoint}")
                time.sleep(0.1)
        for key, value in {
            "AWS_ACCESS_KEY_ID": "kernelhop-test",
            "AWS_SECRET_ACCESS_KEY": "kernelhop-test-secret",
            "AWS_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/hops", method="PUT")).close()
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/start-recording", method="POST")).close()
        yield endpoint, recording
    finally:
        stop_process(process)


def recorded(file: Path) -> list[dict[str, Any]]:
    """moto's recording: one JSON object per request, but its server's threads may write an entry's newline after
    another entry, so objects are read one after another rather than line by line."""
    text, decoder, entries, at = file.read_text(), json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return entries
        entry, at = decoder.raw_decode(text, at)
        entries.append(entry)


def test_a_hop_on_postgres_and_s3_fetches_chunks_by_presigned_urls(
    postgres: str, moto: tuple[str, Path], tmp_path: Path
) -> None:
    endpoint, recording = moto
    token, token_file = secrets.token_hex(16), tmp_path / "runtime-token"
    stores = ["--store", "s3://hops/team-a", "--s3-endpoint", endpoint, "--metadata", postgres]
    gateway = start_gateway(
        data=tmp_path / "gateway", token=token, port=0, grpc_port=0, runtime_token_file=token_file, extra=stores
    )
    runtime = None
    kernel = None
    try:
        runtime = start_runtime(
            gateway=gateway.ready["grpc"],
            token=runtime_token(token_file),
            classes=["h100"],
            capacity=1,
            cache=tmp_path / "runtime-cache",
        )
        stack = Stack(gateway, runtime, token, tmp_path / "gateway")
        kernel = Kernel(stack.env())
        setup = kernel.run("import numpy as np\nx = np.random.default_rng(7).random(1_000_000)\nn = 1")
        assert setup.status == "ok", setup.error_text
        remote = kernel.run("%%gpu h100\ny = float(x.sum())\nn += 1\nprint('remote', n)")
        assert remote.status == "ok", remote.error_text
        assert "remote 2" in remote.stream_text("stdout")
        assert kernel.value("n") == "2"
        assert kernel.value("y == float(x.sum())") == "True"
    finally:
        if kernel is not None:
            kernel.shutdown()
        if runtime is not None:
            runtime.stop()
        gateway.stop()

    # Nothing of the blobs is on the gateway's disk; all of them are in the bucket under the prefix.
    assert not (tmp_path / "gateway" / "cas").exists()
    requests = recorded(recording)
    uploads = {r["url"].split("?")[0] for r in requests if r["method"] == "PUT" and "/hops/team-a/cas/" in r["url"]}
    presigned = [r for r in requests if r["method"] == "GET" and "X-Amz-Signature=" in r["url"]]
    fetched = {r["url"].split("?")[0] for r in presigned}
    # x is 8 MB of random bytes: several chunks (at most 1 MiB each), each fetched once by URL, by the runtime.
    assert len(fetched) >= 8, f"{len(fetched)} blobs fetched by presigned URL"
    assert len(presigned) == len(fetched), "each blob fetched once"
    assert fetched <= uploads, "only blobs of this hop"
    assert all("/hops/team-a/cas/" in r["url"] for r in presigned)
    # The run is in Postgres, done, with its result; the schema is at its migrated version.
    assert psql(postgres, "SELECT status || ' ' || outcome FROM runs") == "done ok"
    migrations = Path(__file__).parents[2] / "gateway" / "src" / "stores" / "migrations"
    assert psql(postgres, "SELECT max(version) FROM schema_version") == str(len(list(migrations.glob("[0-9]*.ts"))))
    assert not (tmp_path / "gateway" / "kernelhop.db").exists()


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "kernelhop.cli", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_user_added_on_one_gateway_hops_through_another_that_counts_both_runs(
    postgres: str, moto: tuple[str, Path], tmp_path: Path
) -> None:
    endpoint, _ = moto
    # One deployment: one admin token, one database, one bucket; each gateway its own --data.
    token, token_file = secrets.token_hex(16), tmp_path / "runtime-token"
    stores = ["--store", "s3://hops/team-b", "--s3-endpoint", endpoint, "--metadata", postgres]
    data_a, data_b = tmp_path / "gateway-a", tmp_path / "gateway-b"

    def as_(gateway: Service, user_token: str, **more: str) -> dict[str, str]:
        return {**os.environ, "KERNELHOP_GATEWAY": gateway.ready["ws"], "KERNELHOP_TOKEN": user_token, **more}

    def hop_through(gateway: Service, user_token: str, notebook: str) -> None:
        """A runtime on `gateway` with the token A made, and one `%%gpu` hop of a new kernel through it."""
        runtime = start_runtime(
            gateway=gateway.ready["grpc"],
            token=runtime_token(token_file),
            classes=["h100"],
            capacity=1,
            cache=tmp_path / f"cache-{notebook}",
        )
        kernel = Kernel(as_(gateway, user_token, JPY_SESSION_NAME=notebook))
        try:
            done = kernel.run("%%gpu h100\nimport os\nprint('on', os.getpid() > 0)")
            assert done.status == "ok", done.error_text
            assert "on True" in done.stream_text("stdout")
        finally:
            kernel.shutdown()
            runtime.stop()

    gateway_a = start_gateway(
        data=data_a, token=token, port=0, grpc_port=0, runtime_token_file=token_file, extra=stores
    )
    try:
        uma = cli(as_(gateway_a, token), "user", "add", "uma").strip().splitlines()[-1]
        cli(as_(gateway_a, token), "user", "limit", "uma", "--slots", "1")
        hop_through(gateway_a, uma, "a.ipynb")
    finally:
        gateway_a.stop()

    # A is gone; B, on the same database and bucket, knows uma, A's runtime token, A's run and uma's limit.
    gateway_b = start_gateway(data=data_b, token=token, port=0, grpc_port=0, extra=stores)
    try:
        hop_through(gateway_b, uma, "b.ipynb")
        report = json.loads(cli(as_(gateway_b, uma), "usage", "--json"))
        assert report["total"]["runs"] == 2, report
        assert sorted(r["key"] for r in report["by"]["notebook"]) == ["uma\ta.ipynb", "uma\tb.ipynb"]
        assert cli(as_(gateway_b, token), "user", "limit").split() == ["uma", "1", "slot(s)"]
    finally:
        gateway_b.stop()
    # Every row is in Postgres, none on either gateway's disk.
    for data in (data_a, data_b):
        assert [p.name for p in data.iterdir() if p.name.startswith("kernelhop")] == [], sorted(data.iterdir())
    assert psql(postgres, "SELECT count(*) FROM usage WHERE \"user\" = 'uma'") == "2"
