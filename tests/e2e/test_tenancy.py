"""Two users on one real gateway and runtime, attacking each other from inside `%%gpu` cells as issue 13 describes:
the admin's token where a cell can look, a rogue runtime over gRPC, another user's blobs, another user's session,
and results past a quota. The worker-side attacks (reading /proc of other workers, the cache) are in the sandbox's
tests; here the gateway and its credentials are under attack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kernelhop_snapshot.digest import digest_of
from kernelhop_testing import Kernel, Stack

from kernelhop.client.gateway import GatewayConnection

ROGUE = Path(__file__).with_name("rogue_runtime.js")


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> Iterator[dict[str, str]]:
    made = {}
    for name, quota in (("ann", 0), ("bob", 0), ("cap", 1 << 20)):
        made[name] = stack.admin_op("user_add", name=name, quota_bytes=quota)["token"]
    yield made
    for name in made:
        stack.admin_op("user_rm", name=name)


@pytest.fixture
def user_kernel(stack: Stack, tokens: dict[str, str], make_kernel: Callable[[dict[str, str]], Kernel]):
    return lambda name: make_kernel(stack.env(KERNELHOP_TOKEN=tokens[name]))


def gpu(kernel: Kernel, body: str):
    execution = kernel.run("%%gpu h100\n" + body)
    assert execution.status == "ok", execution.error_text
    return execution.stream_text("stdout")


def test_no_admin_token_where_a_cell_can_look(stack: Stack, user_kernel) -> None:
    """The cell's environment, the runtime's /proc environ and gateway.json: the admin's token is in none of them."""
    runtime_pid = stack.runtime.process.pid
    environ = Path(f"/proc/{runtime_pid}/environ").read_bytes().split(b"\0")
    tokens = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"KERNELHOP_TOKEN=")]
    assert len(tokens) == 1 and tokens[0].startswith("khr_"), "the runtime holds a runtime token"
    ann = user_kernel("ann")
    out = gpu(
        ann,
        f"""
import os, pathlib
needle = {stack.token!r}
places = {{}}
def look(place, read):
    # A sandboxed worker cannot even see the place: that counts as looked at, with nothing found.
    try:
        places[place] = read()
    except OSError as e:
        places[place] = f"unreadable: {{e}}"
look("os.environ", lambda: "\\n".join(os.environ.values()))
look("/proc/runtime/environ", lambda: pathlib.Path("/proc/{runtime_pid}/environ").read_bytes().decode(errors="replace"))
look("gateway.json", lambda: "\\n".join(f.read_text() for f in pathlib.Path({str(stack.data)!r}).rglob("gateway.json")))
print("searched", sorted(places))
print("found in", [k for k, v in places.items() if needle in v])
""",
    )
    assert "gateway.json" in out and "/proc/runtime/environ" in out, out
    assert "found in []" in out, out


def test_rogue_runtime_is_refused_the_admin_token_and_reads_no_blob_of_another_user(
    stack: Stack, tokens: dict[str, str], user_kernel
) -> None:
    """From ann's cell: register a runtime over gRPC with the admin's token (refused), then with a runtime token of
    some other host; as that runtime, read a blob of bob's (refused: no run of bob's is assigned to it)."""
    secret = b"bob's secret bytes, never for ann"
    digest = str(digest_of(secret))
    bob = GatewayConnection(stack.ws_url, tokens["bob"], source="bob's token")
    try:
        bob.put_blobs({digest: secret})
    finally:
        bob.close()
    other_host = stack.admin_op("runtime_token_create")["token"]
    node = shutil.which("node")
    assert node is not None
    grpc = stack.gateway.ready["grpc"]
    ann = user_kernel("ann")
    out = gpu(
        ann,
        f"""
import subprocess
def rogue(token):
    return subprocess.run([{node!r}, {str(ROGUE)!r}, {grpc!r}, token, {digest!r}], capture_output=True, text=True, check=True).stdout
print("ADMIN", rogue({stack.token!r}))
print("RUNTIME", rogue({other_host!r}))
""",
    )
    lines = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if " {" in line}
    admin = lines["ADMIN"]
    assert admin["register"]["code"] == 7, admin  # PERMISSION_DENIED
    assert "admin token is refused on gRPC" in admin["register"]["details"]
    assert "runtime-token create" in admin["register"]["details"]
    assert secret.decode() not in json.dumps(admin)
    runtime = lines["RUNTIME"]
    assert runtime["register"] == "ok", runtime
    assert [r["code"] for r in runtime["read"]] == [7], runtime
    assert "not part of a run assigned to this runtime" in runtime["read"][0]["message"]
    assert secret.decode() not in json.dumps(runtime)


def test_naming_another_users_session_never_reaches_their_worker(user_kernel) -> None:
    ann, bob = user_kernel("ann"), user_kernel("bob")
    gpu(ann, "import os\nos.environ['ANN_WAS_HERE'] = 'ann'\nprint('set')")
    session = ann.value("get_ipython().magics_manager.registry['GpuMagics'].hopper.session")
    assert len(session.strip("'")) == 32, "128 random bits"
    ok = bob.run(f"get_ipython().magics_manager.registry['GpuMagics'].hopper.session = {session}")
    assert ok.status == "ok", ok.error_text
    out = gpu(bob, "import os\nprint('mark:', os.environ.get('ANN_WAS_HERE'))")
    assert "mark: None" in out, f"bob's cell ran in ann's warm worker: {out}"
    # Ann's own next cell still reaches her warm worker.
    assert "mark: ann" in gpu(ann, "import os\nprint('mark:', os.environ.get('ANN_WAS_HERE'))")


def test_a_result_past_the_quota_fails_the_hop_and_the_kernel_keeps_its_state(user_kernel) -> None:
    cap = user_kernel("cap")
    assert cap.run("before = 'kept'").status == "ok"
    execution = cap.run("%%gpu h100\nimport os\nbig = os.urandom(4 << 20)\nbefore = 'changed remotely'")
    assert execution.status == "error"
    assert "quota exceeded" in execution.error_text and "of 1048576 bytes used" in execution.error_text, execution.error_text
    assert cap.value("before") == "'kept'"
    assert cap.value("'big' in globals()") == "False"


def test_runtime_token_cli_on_the_gateways_host(stack: Stack) -> None:
    """`kernelhop runtime-token create|list|revoke` as the admin, whose token the command reads from admin-token."""
    home = stack.data / "gateway"
    env = {k: v for k, v in stack.env(KERNELHOP_HOME=str(home)).items() if k not in ("KERNELHOP_TOKEN", "KERNELHOP_GATEWAY")}

    def kernelhop(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "kernelhop.cli", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    created = kernelhop("runtime-token", "create", "--class", "a100").splitlines()
    token = created[-1]
    assert token.startswith("khr_") and "class a100" in created[0]
    token_id = created[0].split()[2]
    assert f"{token_id}" in kernelhop("runtime-token", "list")
    assert "revoked" in kernelhop("runtime-token", "revoke", token_id)
    assert re.search(rf"{token_id}\s+a100\s+revoked", kernelhop("runtime-token", "list"))
