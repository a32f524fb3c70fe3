"""Snapshots end to end: real gateway processes, real kernels, two (and three) users."""

from __future__ import annotations

import re
import sqlite3
import time

from jupyter_client.blocking.client import BlockingKernelClient

from kernelhop.environment import differences
from kernelhop_testing import StoredBlob, stored_blobs

STATE = """
import numpy as np
x = np.arange(100_000, dtype=np.float64)
view = x[10:20]
y = {"a": 1, "b": [1, 2, 3]}
def f(n):
    return n * 2 + len(y)
"""

CHECK = "print(float(x.sum()), np.shares_memory(view, x), y, f(20))"


def snapshot_id(out: str) -> str:
    m = re.search(r"\(([0-9a-f]{64})\)", out)
    assert m, out
    return m.group(1)


def saved_state(k, name: str) -> str:
    k.ok(STATE)
    return snapshot_id(k.ok(f"%snapshot save {name} -m 'first state'"))


def test_save_restore_across_kernels_diff_and_log(users, kernel):
    alice = users["alice"]
    a = kernel(alice)
    first = saved_state(a, "first")
    expected = a.ok(CHECK)
    a.ok("x[0] = 99.0\ndel y\nz = 'new'\ny2 = 5")
    second = snapshot_id(a.ok("%snapshot save second"))

    diff = a.ok("%snapshot diff first second")
    # x and view share their buffer, so they are one group and change together.
    assert "2 added, 2 changed, 1 removed" in diff, diff
    assert all(m in diff for m in ("+ z", "+ y2", "~ view", "~ x")), diff
    assert "- y  (builtins.dict" in diff

    log = a.ok("%snapshot log second")
    assert log.index(second) < log.index(first)
    assert "x[0] = 99.0" not in log  # the log shows counts; the cells are in the record
    record = alice.api().get(second)["record"]
    assert record["cells"] == [CHECK, "x[0] = 99.0\ndel y\nz = 'new'\ny2 = 5"]
    assert record["parents"] == [first]
    assert record["environment"]["packages"]["numpy"]

    listing = a.ok("%snapshot list")
    assert first[:12] in listing and "[first]" in listing

    b = kernel(alice)
    b.ok("leftover = 1")
    out = b.ok("%snapshot restore first")
    assert "restored snapshot" in out
    assert b.ok(CHECK) == expected
    assert b.fails("leftover").count("NameError") >= 1  # the state is the snapshot's, nothing more
    # Time travel in the first kernel: back to the first state.
    a.ok(f"%snapshot restore {first[:10]}")
    assert a.ok(CHECK) == expected


def test_share_trust_revoke_and_a_third_user(users, kernel):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    a = kernel(alice)
    sid = saved_state(a, "for-bob")
    expected = a.ok(CHECK)
    share = re.search(r"share ([0-9a-f]+);", a.ok("%snapshot share for-bob --with bob")).group(1)

    b = kernel(bob)
    b.ok("mine = 'bob'")
    refused = b.fails(f"%snapshot restore {sid}")
    assert "signed by alice" in refused and "--trust" in refused, refused
    assert b.ok("print(mine)").strip() == "bob"  # untouched
    out = b.ok(f"%snapshot restore {sid} --trust")
    assert "trusting alice" in out
    assert b.ok(CHECK) == expected
    # Trusted from now on.
    b.ok(f"%snapshot restore {sid}")

    c = kernel(carol)
    assert "not found or not yours" in c.fails(f"%snapshot restore {sid} --trust")
    assert "not found or not yours" in c.fails(f"%snapshot diff {sid} {sid}")

    a.ok(f"%snapshot revoke {share}")
    assert "not found or not yours" in b.fails(f"%snapshot restore {sid}")


def test_link_expires(users, kernel):
    a = kernel(users["alice"])
    saved_state(a, "linked")
    expected = a.ok(CHECK)
    out = a.ok("%snapshot share linked --link --expires 3")
    link = re.search(r"link (khl_[A-Za-z0-9_-]+)", out).group(1)
    c = kernel(users["carol"])
    c.ok(f"%snapshot restore {link} --trust")
    assert c.ok(CHECK) == expected
    time.sleep(3.5)
    assert "unknown, expired or revoked" in c.fails(f"%snapshot restore {link}")


def _stored(gateway, digest: str) -> StoredBlob:
    return stored_blobs(gateway.data / "cas")[digest.split("/")[0]]


def test_tampered_chunk_and_manifest_are_refused(users, kernel, gateway):
    alice, bob = users["alice"], users["bob"]
    a = kernel(alice)
    a.ok("import numpy as np\nsecret = np.ones(50_000)")
    sid = snapshot_id(a.ok("%snapshot save tamper"))
    a.ok("%snapshot share tamper --with bob")
    api = alice.api()
    _, manifest = api.manifest_of(sid)
    record = api.get(sid)["record"]

    # A chunk altered on the gateway's disk.
    chunk = str(sorted(manifest.blob_digests())[0])
    stored = _stored(gateway, chunk)
    original = stored.read()
    stored.overwrite(bytes([original[0] ^ 1]) + original[1:])
    b = kernel(bob)
    b.ok("keep = 1")
    out = b.fails(f"%snapshot restore {sid} --trust")
    assert "refused" in out and "altered" in out, out
    assert b.ok("print(keep)").strip() == "1"
    stored.overwrite(original)

    # The manifest blob altered on disk.
    mstored = _stored(gateway, record["manifest"])
    mbytes = mstored.read()
    mstored.overwrite(mbytes.replace(b'"secret"', b'"sekret"'))
    out = kernel(bob).fails(f"%snapshot restore {sid} --trust")
    assert "refused" in out, out
    mstored.overwrite(mbytes)

    # The signed record altered in the gateway's database (pointing at another manifest, say).
    db = sqlite3.connect(gateway.data / "kernelhop.db")
    row = db.execute("SELECT record FROM snapshots WHERE id = ?", (sid,)).fetchone()[0]
    db.execute(
        "UPDATE snapshots SET record = ? WHERE id = ?",
        (row.replace("tamper", "tamperX").replace('"message":""', '"message":"evil"'), sid),
    )
    db.commit()
    out = kernel(bob).fails(f"%snapshot restore {sid} --trust")
    assert "refused" in out, out
    db.execute("UPDATE snapshots SET record = ? WHERE id = ?", (row, sid))
    db.commit()
    db.close()
    k = kernel(bob)
    k.ok(f"%snapshot restore {sid} --trust")
    assert k.ok("print(float(secret.sum()))").strip() == "50000.0"


def test_environment_differences_are_said_before_restoring(users, kernel):
    a = kernel(users["alice"])
    a.ok(
        "import kernelhop.magics.snapshot as s\n_real = s.record_environment\n"
        "s.record_environment = lambda: {**_real(), 'packages': {**_real()['packages'], 'numpy': '0.0.1'}}"
    )
    a.ok("v = 3")
    a.ok("%snapshot save envdiff")
    b = kernel(users["alice"])
    ex = b.run("%snapshot restore envdiff")
    assert ex.status == "ok", ex.error_text
    err = ex.stream_text("stderr")
    assert re.search(r"numpy: here \d+\.\d+\S*, in snapshot 0\.0\.1", err), err
    assert "restored" in ex.stream_text("stdout")
    assert differences({"python": "2.7.18", "packages": {}})[0][0] == "python"


def test_fork_starts_a_kernel_holding_the_state(users, kernel):
    a = kernel(users["alice"])
    saved_state(a, "to-fork")
    expected = a.ok(CHECK)
    out = a.ok("%snapshot fork to-fork --name forked")
    connection_file = re.search(r"connection file: (\S+)", out).group(1)
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    try:
        texts: list[str] = []
        client.execute_interactive(
            CHECK,
            output_hook=lambda m: texts.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
            timeout=60,
        )
        assert "".join(texts) == expected
    finally:
        client.shutdown()
        client.stop_channels()
    log = a.ok("%snapshot log forked")
    assert "fork of" in log


def test_auto_snapshots_for_undo(users, kernel):
    a = kernel(users["alice"])
    a.ok("%snapshot auto on")
    a.ok("counter = 1")
    a.ok("counter = 2")
    a.ok("print('no change')")
    a.ok("%snapshot auto off")
    listing = users["alice"].api().request("snapshot_list")["snapshots"]
    autos = [s for s in listing if s["message"].startswith("auto:")]
    assert len(autos) == 2  # the cell that changed nothing made no snapshot
    first_auto = [s for s in autos if users["alice"].api().get(s["id"])["record"]["cells"][-1] == "counter = 1"][0]
    a.ok(f"%snapshot restore {first_auto['id']}")
    assert a.ok("print(counter)").strip() == "1"
