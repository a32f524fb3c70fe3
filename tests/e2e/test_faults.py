"""Faults (issue 13): SIGKILL of the gateway, the runtime or the worker at each step of a hop and of a
`%snapshot save`, each fired by the hop's own progress (the kernel's hop display, the cell's output, the store's
files), never by a sleep. After each: what was committed is still there, no snapshot or ref names a missing or
damaged blob, the kernel's variables are all there and equal, the user was told what died, and, with what was
killed started again, the next hop works. A full disk and a wiped runtime cache are in test_disk_faults.py."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kernelhop_testing import Kernel

from faults import FaultStack, check_store, hop_phase, in_phase, printed, when

BIG = 16 << 20  # bytes: enough that a transfer lasts past its first progress report
STATE = f"""
import hashlib, os
keep = {{"n": 42, "words": ["a", "b"]}}
big = os.urandom({BIG})
digest = hashlib.sha256(big).hexdigest()
"""
KEPT = "{'n': 42, 'words': ['a', 'b']}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    # One slot: the `queued` step needs a run waiting behind another.
    s = FaultStack(tmp_path_factory.mktemp("faults"), capacity=1).start()
    base = Kernel(s.env())
    try:
        assert base.run("base_value = [1, 2, 3]").status == "ok"
        saved = base.run("%snapshot save base")
        assert saved.status == "ok", saved.error_text
    finally:
        base.shutdown()
    yield s
    s.stop()


@pytest.fixture
def kernel(stack: FaultStack) -> Iterator[Kernel]:
    k = Kernel(stack.env())
    made = k.run(STATE)
    assert made.status == "ok", made.error_text
    yield k
    k.shutdown()


def assert_intact(kernel: Kernel, *, changed: bool) -> None:
    """The kernel's state is what it was before the hop (or, for a hop that succeeded, what the cell made)."""
    assert kernel.value("keep") == ("{'n': -1, 'words': ['a', 'b']}" if changed else KEPT)
    assert kernel.value("hashlib.sha256(big).hexdigest() == digest") == "True"
    assert kernel.value("'fresh' in globals()") == ("True" if changed else "False")


def next_hop_works(stack: FaultStack, kernel: Kernel, snapshots: set[str]) -> None:
    assert snapshots <= check_store(stack.data), "a committed snapshot was lost"
    after = kernel.run("%%gpu h100\nkeep['after'] = len(big)\nprint('again', len(keep['words']))")
    assert after.status == "ok", after.error_text
    assert "again 2" in after.stream_text("stdout")
    assert kernel.value("keep['after']") == str(BIG)
    check_store(stack.data)


# The cell: reads big (so the runtime has it to fetch), makes `fresh` (so it has a result to upload) after a line
# that says it runs, and changes keep.
CELL = f"""%%gpu h100
import os, time
print("cell-is-running", flush=True)
time.sleep({{pause}})
fresh = os.urandom({BIG})
keep["n"] = -1 + 0 * len(big)  # reaches big: the runtime fetches it (a lazy run fetches what the cell reaches)
"""

# step -> (when to kill, how long the cell sleeps after it says it runs)
STEPS: dict[str, Any] = {
    "upload": (in_phase("upload"), 0),
    "queued": (in_phase("queued"), 0),
    "fetch": (in_phase("fetch"), 0),
    "running": (printed("cell-is-running"), 30),
    "result-upload": (in_phase("return", moving=False), 0),
    # The runtime has uploaded everything and sent done: the gateway checks and commits the result's holds.
    "commit": (lambda m: (s := hop_phase(m)) is not None and s["phase"] == "return" and s["bytes_done"] >= s["bytes_total"] > 0, 0),
    "home": (in_phase("home"), 0),
}
# Where the hop still succeeds: what died had done its part (the worker after its capture, the runtime once the
# gateway has the whole result); `commit` may go either way, as the kill lands before or after the gateway's commit.
SURVIVES = {("worker", "result-upload"), ("worker", "commit"), ("runtime", "home")}
CASES = [
    (victim, step)
    for step in STEPS
    for victim in ("gateway", "runtime", "worker")
    # No worker of the run exists before it is assigned one, nor runs after its capture only for this hop.
    if not (victim == "worker" and step in ("upload", "queued", "fetch", "home"))
]
# What the user must be told, by what died.
TOLD = {
    "gateway": "gateway",
    "runtime": "runtime",
    "worker": "worker",
}


@pytest.mark.parametrize(("victim", "step"), CASES, ids=[f"{v}-at-{s}" for v, s in CASES])
def test_kill_during_a_hop(stack: FaultStack, kernel: Kernel, make_kernel, victim: str, step: str) -> None:
    snapshots = check_store(stack.data)
    moment, pause = STEPS[step]
    blocker = blocking = None
    if step == "queued":
        # Another session holds the only slot, so this run waits in the queue.
        blocker = make_kernel(stack.env())
        started = threading.Event()
        blocking = threading.Thread(
            target=lambda: blocker.run("%%gpu h100\nimport time\nprint('holding', flush=True)\ntime.sleep(120)",
                                       on_message=when(printed("holding"), lambda _: started.set())),
            daemon=True,
        )
        blocking.start()
        assert started.wait(120), "the blocking cell never ran"
    worker = {}

    def track(msg: dict[str, Any]) -> None:
        state = hop_phase(msg)
        if state and isinstance(state.get("worker"), str):
            worker["pid"] = int(state["worker"].rsplit("/", 1)[1])

    def kill(_msg: dict[str, Any]) -> None:
        if victim == "worker":
            os.kill(worker["pid"], signal.SIGKILL)
        else:
            stack.kill(victim)

    hook = when(moment, kill)
    execution = kernel.run(CELL.format(pause=pause), on_message=lambda m: (track(m), hook(m)))
    assert hook.fired, f"the hop never reached {step}: {execution.status} {execution.error_text}"
    if blocking is not None:
        blocking.join(180)
    if victim != "worker":
        stack.restart(victim)
    survived = execution.status == "ok"
    if (victim, step) in SURVIVES:
        assert survived, execution.error_text
    elif step != "commit":
        assert not survived, f"the hop succeeded although the {victim} was killed at {step}"
    if not survived:
        told = execution.error_text
        assert TOLD[victim] in told and "unchanged" in told, told
    assert_intact(kernel, changed=survived)
    next_hop_works(stack, kernel, snapshots)


def test_kill_the_gateway_while_a_save_uploads(stack: FaultStack, kernel: Kernel) -> None:
    """The gateway dies once the save's first new chunk is on its disk: no snapshot of it, nothing dangling; the
    same save then works, and restores."""
    snapshots = check_store(stack.data)
    cas = stack.data / "cas"
    before = {p.name for p in cas.glob("*/*") if not p.name.endswith(".tmp")}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if any(p.name not in before for p in cas.glob("*/*") if not p.name.endswith(".tmp")):
                stack.kill("gateway")
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    execution = kernel.run("%snapshot save during")
    stop.set()
    watcher.join(30)
    assert stack.gateway is not None and stack.gateway.process.poll() is not None, "the save never stored a chunk"
    assert execution.status == "error", "the save succeeded against a killed gateway"
    assert "gateway" in execution.error_text, execution.error_text
    stack.restart("gateway")
    assert snapshots == check_store(stack.data), "the killed save left a snapshot behind"
    assert_intact(kernel, changed=False)
    saved = kernel.run("%snapshot save during")
    assert saved.status == "ok", saved.error_text
    check_store(stack.data)
    assert kernel.run("del keep, big").status == "ok"
    restored = kernel.run("%snapshot restore during")
    assert restored.status == "ok", restored.error_text
    assert_intact(kernel, changed=False)
    next_hop_works(stack, kernel, snapshots)


def test_a_save_that_returned_survives_a_kill_right_after(stack: FaultStack, kernel: Kernel) -> None:
    """Once `%snapshot save` has said it saved, SIGKILL of the gateway loses nothing of it (FULL sync, write order)."""
    saved = kernel.run("%snapshot save committed")
    assert saved.status == "ok", saved.error_text
    stack.kill("gateway")
    stack.restart("gateway")
    check_store(stack.data)
    assert kernel.run("del keep, big, digest").status == "ok"
    restored = kernel.run("%snapshot restore committed")
    assert restored.status == "ok", restored.error_text
    assert_intact(kernel, changed=False)
    base = kernel.run("%snapshot restore base")
    assert base.status == "ok", base.error_text
    assert kernel.value("base_value") == "[1, 2, 3]"

