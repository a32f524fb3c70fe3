"""The `kernelhop snapshot|user` commands, export/import as one file, and a gateway killed (-9) mid-save."""

from __future__ import annotations

import argparse
import re
import secrets
import time
from pathlib import Path

from snapshot_harness import SnapKernel, User, launch_gateway

from kernelhop.cli.snapshot_parser import add_subcommands


def cli(monkeypatch, capsys, user_env: dict[str, str], *argv: str) -> tuple[int, str]:
    for key in ("KERNELHOP_GATEWAY", "KERNELHOP_TOKEN", "KERNELHOP_HOME"):
        monkeypatch.setenv(key, user_env[key])
    parser = argparse.ArgumentParser(prog="kernelhop")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(list(argv))
    status = ns.run(ns)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def admin_env(gateway, home) -> dict[str, str]:
    return {"KERNELHOP_GATEWAY": gateway.url, "KERNELHOP_TOKEN": gateway.token, "KERNELHOP_HOME": str(home)}


def on_disk(cas: Path) -> int:
    """Bytes under the store's folder, a pack being written included (files come and go meanwhile)."""
    total = 0
    for p in cas.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except FileNotFoundError:
            pass
    return total


def test_user_commands_are_for_admins(gateway, users, monkeypatch, capsys, tmp_path):
    status, out = cli(monkeypatch, capsys, admin_env(gateway, tmp_path), "user", "add", "frank", "--quota", "1000000")
    assert status == 0, out
    token = out.strip().splitlines()[-1]
    frank = User("frank", token, tmp_path / "frank", gateway)
    status, out = cli(monkeypatch, capsys, frank.env(), "user", "add", "mallory")
    assert status == 1 and "user_add is for admins" in out
    status, out = cli(monkeypatch, capsys, admin_env(gateway, tmp_path), "user", "ls")
    assert "frank" in out and "976.6 KiB" in out
    status, out = cli(monkeypatch, capsys, admin_env(gateway, tmp_path), "user", "quota", "frank", "2000000")
    assert status == 0 and "frank: 1.9 MiB, 0 B used" in out, out
    status, out = cli(monkeypatch, capsys, frank.env(), "user", "quota", "frank", "0")
    assert status == 1 and "user_quota is for admins" in out
    status, out = cli(monkeypatch, capsys, admin_env(gateway, tmp_path), "user", "token", "frank")
    assert status == 0
    status, out = cli(monkeypatch, capsys, frank.env(), "snapshot", "ls")
    assert status == 1 and "refused the token" in out
    assert cli(monkeypatch, capsys, admin_env(gateway, tmp_path), "user", "rm", "frank")[0] == 0


def test_user_limit_sets_lists_and_removes_a_users_slot_limit(gateway, users, monkeypatch, capsys, tmp_path):
    admin = admin_env(gateway, tmp_path)
    assert cli(monkeypatch, capsys, admin, "user", "add", "gwen")[0] == 0
    status, out = cli(monkeypatch, capsys, admin, "user", "limit", "gwen", "--slots", "2")
    assert status == 0 and "gwen: at most 2 slot(s) at once" in out, out
    status, out = cli(monkeypatch, capsys, admin, "user", "limit")
    assert status == 0 and re.search(r"^gwen\s+2 slot\(s\)$", out, re.M), out
    status, out = cli(monkeypatch, capsys, admin, "user", "limit", "nobody", "--slots", "1")
    assert status == 1 and "no user \"nobody\"" in out, out
    status, out = cli(monkeypatch, capsys, admin, "user", "limit", "gwen", "--none")
    assert status == 0 and "gwen: no slot limit" in out, out
    assert "no user has a slot limit" in cli(monkeypatch, capsys, admin, "user", "limit")[1]


def test_export_import_show_diff_rm_gc(gateway, users, kernel, monkeypatch, capsys, tmp_path):
    alice = users["alice"]
    a = kernel(alice)
    a.ok("import numpy as np\nbig = np.arange(300_000)\nsmall = 'one'")
    first = re.search(r"\(([0-9a-f]{64})\)", a.ok("%snapshot save cli-a")).group(1)
    a.ok("small = 'two'")
    a.ok("%snapshot save cli-b -m 'second'")

    status, out = cli(monkeypatch, capsys, alice.env(), "snapshot", "ls")
    assert status == 0 and "[cli-a]" in out and "second" in out
    status, out = cli(monkeypatch, capsys, alice.env(), "snapshot", "show", "cli-b")
    assert "small = 'two'" in out and "numpy==" in out and f"parents {first[:12]}" in out
    status, out = cli(monkeypatch, capsys, alice.env(), "snapshot", "diff", "cli-a", "cli-b")
    assert "0 added, 1 changed, 0 removed" in out and "~ small" in out

    exported = tmp_path / "cli-a.khsnap"
    status, out = cli(monkeypatch, capsys, alice.env(), "snapshot", "export", "cli-a", str(exported))
    assert status == 0, out

    # A new user, as someone outside the gateway would be: import verifies and saves; restoring needs --trust.
    token = gateway.api().request("user_add", name="dave")["token"]
    dave = User("dave", token, tmp_path / "dave", gateway)
    status, out = cli(monkeypatch, capsys, dave.env(), "snapshot", "import", str(exported), "--name", "from-alice")
    assert status == 0, out
    d = kernel(dave)
    refused = d.fails("%snapshot restore from-alice")
    assert "calls itself 'alice'" in refused and "--trust" in refused, refused
    d.ok("%snapshot restore from-alice --trust")
    assert d.ok("print(int(big.sum()), small)").strip() == f"{sum(range(300_000))} one"

    # A file altered anywhere is refused.
    data = bytearray(exported.read_bytes())
    data[-10] ^= 1
    tampered = tmp_path / "tampered.khsnap"
    tampered.write_bytes(bytes(data))
    status, out = cli(monkeypatch, capsys, dave.env(), "snapshot", "import", str(tampered))
    assert status == 1 and "altered" in out, out
    data = bytearray(exported.read_bytes())
    data[data.index(b'"created":"') + 11] = ord("3")  # the year, still valid JSON
    tampered.write_bytes(bytes(data))
    status, out = cli(monkeypatch, capsys, dave.env(), "snapshot", "import", str(tampered))
    assert status == 1 and "signature" in out, out

    status, out = cli(monkeypatch, capsys, dave.env(), "snapshot", "rm", "from-alice")
    assert status == 0, out
    status, out = cli(monkeypatch, capsys, dave.env(), "snapshot", "gc")
    assert status == 1 and "gc is for admins" in out
    status, out = cli(monkeypatch, capsys, admin_env(gateway, tmp_path), "snapshot", "gc", "--grace", "0")
    assert status == 0 and "gc: removed" in out, out
    # Alice's snapshots are untouched by dave's rm and the gc.
    b = kernel(alice)
    b.ok("%snapshot restore cli-b")
    assert b.ok("print(small)").strip() == "two"


def test_kill_9_during_save_leaves_no_ref_to_a_missing_chunk(tmp_path):
    token = secrets.token_hex(16)
    gw = launch_gateway(tmp_path / "gw", token)
    restarted = None
    try:
        user_token = gw.api().request("user_add", name="ann")["token"]
        ann = User("ann", user_token, tmp_path / "ann", gw)
        k = SnapKernel(ann.env())
        try:
            k.ok("import numpy as np\nkept = np.arange(1000)")
            k.ok("%snapshot save before")
            k.ok("big = np.random.default_rng(0).random(48 * 1024 * 1024 // 8 * 4)")  # 192 MiB
            k.client.execute("%snapshot save during")
            cas = gw.data / "cas"
            deadline = time.monotonic() + 60
            # Killed once some of the save is on disk (about 24 MiB: 3 of its packs), well before all of it.
            while on_disk(cas) < 24 << 20 and time.monotonic() < deadline:
                time.sleep(0.005)
            gw.service.process.kill()
            gw.service.process.wait()
        finally:
            k.shutdown()
        restarted = launch_gateway(gw.data, token)
        api = User("ann", user_token, ann.home, restarted).api()
        listing = api.request("snapshot_list")
        names = set(listing["refs"])
        assert "before" in names
        # Whatever rows exist, every blob each one names is in the store.
        for s in listing["snapshots"]:
            sid, manifest = api.manifest_of(s["id"])
            assert api.client.find_missing(str(d) for d in manifest.blob_digests()) == [], sid
        if "during" not in names:
            assert not any(s["message"] == "" and s["size_bytes"] > 100_000_000 for s in listing["snapshots"])
        report = restarted.api().request("gc", grace_s=0)["report"]
        # What the cut-short save left (blobs, or temporaries of puts in flight) goes at the next gc.
        assert report["blobs_removed"] + report["temporaries_removed"] >= (0 if "during" in names else 1), report
        assert not [p for p in (gw.data / "cas").rglob("*.tmp")]
        k2 = SnapKernel(ann.env(KERNELHOP_GATEWAY=restarted.url))
        try:
            k2.ok("%snapshot restore before")
            assert k2.ok("print(int(kept.sum()))").strip() == str(sum(range(1000)))
        finally:
            k2.shutdown()
    finally:
        gw.service.stop()
        if restarted is not None:
            restarted.service.stop()
