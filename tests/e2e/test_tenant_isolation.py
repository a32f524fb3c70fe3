"""Two users on one gateway and one runtime: from inside user A's `%%gpu` cell, attack user B's warm session.

Everything here is what an attacker's cell would do: walk the runtime's cache and data directories for B's secret
and B's variable names, read every process's environment and memory through /proc, ptrace-attach, signal. Each
attack comes home in the cell's `found`, and the test fails naming whatever worked. Needs the runtime's sandbox
(bubblewrap, root or user namespaces): where it is missing the runtime refuses to start and the fixture fails so.
"""

from __future__ import annotations

import ast
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kernelhop_snapshot import MemoryBlobStore
from kernelhop_testing import Kernel, Stack, launch_stack

from kernelhop.client.gateway import GatewayConnection
from kernelhop.client.snapshots import Snapshots


@dataclass
class Tenants:
    stack: Stack
    a: Kernel
    b: Kernel
    tokens: list[str]
    secret: str
    name: str


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    root = tmp_path_factory.mktemp("tenants")
    stack = launch_stack(root)
    kernels: list[Kernel] = []
    try:
        admin = Snapshots(GatewayConnection(stack.ws_url, stack.token), MemoryBlobStore())
        tokens = {}
        for user in ("ann", "ben"):
            tokens[user] = admin.request("user_add", name=f"{user}-{secrets.token_hex(3)}")["token"]
            (root / user).mkdir()
        a = Kernel(stack.env(KERNELHOP_TOKEN=tokens["ann"], KERNELHOP_HOME=str(root / "ann")))
        kernels.append(a)
        b = Kernel(stack.env(KERNELHOP_TOKEN=tokens["ben"], KERNELHOP_HOME=str(root / "ben")))
        kernels.append(b)
        secret, name = f"ben-secret-{secrets.token_hex(24)}", f"ben_private_{secrets.token_hex(6)}"
        made = b.run(f"{name} = {secret!r}")
        assert made.status == "ok", made.error_text
        # B's state goes through the runtime's cache, and B's worker stays warm for B's next cell.
        warm = b.run(f"%%gpu h100\n{name}_remote = {name}.upper()")
        assert warm.status == "ok", warm.error_text
        yield Tenants(stack, a, b, [stack.token, *tokens.values()], secret, name)
    finally:
        for k in kernels:
            k.shutdown()
        stack.stop()


def worker_pids(runtime: int) -> list[int]:
    """Host pids of the runtime's workers (and their sandboxes), as the harness outside any sandbox sees them."""
    found, todo = [], [runtime]
    while todo:
        pid = todo.pop()
        try:
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            continue
        found.extend(children)
        todo.extend(children)
    return found


ATTACK = r'''
%%gpu h100
import ctypes, os
needle, name, tokens = NEEDLE[::-1].encode(), NAME[::-1].encode(), [t[::-1] for t in TOKENS]
found = []
for root in ROOTS:
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            try:
                with open(p, "rb") as fh:
                    data = fh.read(1 << 24)
            except OSError:
                continue
            if needle in data:
                found.append(f"B's secret in {p}")
            if name in data:
                found.append(f"B's variable name in {p}")
for key, value in os.environ.items():
    if any(t in value for t in tokens):
        found.append(f"a token in this cell's environment: {key}")
libc = ctypes.CDLL(None, use_errno=True)
mine = os.getpid()
visible = {int(p) for p in os.listdir("/proc") if p.isdigit()} - {mine}
for pid in sorted(visible | set(TARGETS)):
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read()
        found.append(f"read /proc/{pid}/environ" + (" (with a token)" if any(t.encode() in env for t in tokens) else ""))
    except OSError:
        pass
# Touched only: the runtime and its workers (unsandboxed, every process of the host would be in reach here).
for pid in TARGETS:
    try:
        with open(f"/proc/{pid}/maps") as fh:
            start = int(fh.readline().split("-")[0], 16)
        with open(f"/proc/{pid}/mem", "rb") as fh:
            fh.seek(start)
            fh.read(16)
        found.append(f"read the memory of pid {pid}")
    except (OSError, ValueError):
        pass
    if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
        found.append(f"ptrace-attached pid {pid}")
        os.waitpid(pid, 0x40000000)  # __WALL: until it is stopped, so that the detach resumes it
        libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
    try:
        os.kill(pid, 0)  # the permission check of kill(), without the kill
        found.append(f"may signal pid {pid}")
    except ProcessLookupError:
        pass
    except PermissionError:
        pass
del needle, name, tokens
'''


def attack(t: Tenants) -> list[str]:
    runtime = t.stack.runtime.process.pid
    code = (
        ATTACK.strip()
        .replace("NEEDLE", repr(t.secret[::-1]))
        .replace("NAME", repr(t.name[::-1]))
        .replace("TOKENS", repr([tok[::-1] for tok in t.tokens]))
        .replace("ROOTS", repr([str(t.stack.data), "/kernelhop", "/home"]))
        .replace("TARGETS", repr([runtime, *worker_pids(runtime)]))
    )
    run = t.a.run(code, timeout=300)
    assert run.status == "ok", run.error_text
    return list(ast.literal_eval(t.a.value("found")))


def test_a_cell_cannot_read_touch_or_signal_another_users_session(tenants: Tenants) -> None:
    found = attack(tenants)
    assert found == [], "user A's cell got at user B's session or the runtime:\n" + "\n".join(found)
    # B's worker is alive and still B's: the next cell is warm and has B's state.
    again = tenants.b.run(f"%%gpu h100\nprint({tenants.name}_remote[:10])")
    assert again.status == "ok", again.error_text
    assert again.stream_text("stdout").strip() == tenants.secret.upper()[:10]


def test_shared_memory_works_in_a_cell_and_is_its_own(tenants: Tenants) -> None:
    """multiprocessing, joblib and a torch DataLoader's workers need a writable /dev/shm; each sandbox has its own."""
    mark = f"ben-{secrets.token_hex(4)}"
    planted = tenants.b.run(f"%%gpu h100\nopen('/dev/shm/{mark}', 'w').write('x')")
    assert planted.status == "ok", planted.error_text
    used = tenants.a.run(
        "%%gpu h100\nimport multiprocessing as mp, os\nlock = mp.Lock(); del lock\n"
        "with mp.Pool(2) as p:\n    squares = p.map(abs, [-2, -3])\ndel p\nseen = sorted(os.listdir('/dev/shm'))"
    )
    assert used.status == "ok", used.error_text
    assert tenants.a.value("squares") == "[2, 3]"
    assert mark not in tenants.a.value("seen")


def test_a_zeroed_cache_heals_on_the_next_hop(tenants: Tenants) -> None:
    cache = Path(tenants.stack.data) / "runtime-cache"
    zeroed = 0
    for d, dirs, files in os.walk(cache):
        dirs[:] = [x for x in dirs if x != "workers"]
        for f in files:
            path = Path(d) / f
            path.write_bytes(bytes(path.stat().st_size))
            zeroed += 1
    assert zeroed > 0, f"nothing cached under {cache}"
    # B's next cell on a fresh worker reads every blob of B's state from the cache: each was zeroed.
    runtime = tenants.stack.runtime.process.pid
    killed = set(worker_pids(runtime))
    for pid in killed:
        os.kill(pid, 9)
    # The runtime has seen them go once it starts their replacements.
    deadline = time.monotonic() + 60
    while not set(worker_pids(runtime)) - killed and time.monotonic() < deadline:
        time.sleep(0.1)
    healed = tenants.b.run(f"%%gpu h100\nprint({tenants.name}[:11], {tenants.name}_remote == {tenants.name}.upper())")
    assert healed.status == "ok", healed.error_text
    assert healed.stream_text("stdout").strip() == "ben-secret- True"
