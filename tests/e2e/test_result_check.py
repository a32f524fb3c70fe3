"""The kernel checks a run's result before it unpickles anything of it (issue 13, item 5): a compromised runtime
(tests/e2e/rogue_result_runtime.js, registered with a real runtime token) answers a run with a manifest that gives a
name the cell never reached a pickle that writes a marker file when unpickled. And `from m import *`, which binds
names no code spells, reaches everything, so an honest star import still comes home."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelhop.cli.services import runtime_token
from kernelhop_testing import Kernel, Stack

ROGUE = Path(__file__).with_name("rogue_result_runtime.js")


@pytest.fixture
def rogue(stack: Stack, kernel: Kernel) -> Iterator[tuple[str, Path]]:
    """A rogue runtime offering class `rogue` whose results re-pickle `target`; yields its class and marker."""
    node = shutil.which("node")
    assert node is not None, "the rogue runtime needs Node.js"
    marker = Path(kernel.cwd) / "rogue-pickle-ran"
    token = runtime_token(stack.data / "runtime-token")
    process = subprocess.Popen(
        [node, str(ROGUE), stack.gateway.ready["grpc"], token, "rogue", "target", str(marker)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield "rogue", marker
    finally:
        process.kill()
        process.wait()


def test_a_result_changing_a_name_the_cell_could_not_reach_is_refused_before_unpickling(
    kernel: Kernel, rogue: tuple[str, Path]
) -> None:
    gpu_class, marker = rogue
    assert kernel.run("target = 'mine'\nx = 1").status == "ok"
    execution = kernel.run(f"%%gpu {gpu_class}\nx = x + 1")
    assert execution.status == "error"
    told = execution.error_text
    assert "refused the result of runtime rogue: it changes 'target', which the cell could not reach" in told, told
    assert "Nothing of the result was unpickled; the local namespace is unchanged" in told, told
    assert not marker.exists(), "the kernel unpickled the rogue result"
    assert kernel.value("target") == "'mine'"
    assert kernel.value("x") == "1"


def test_what_the_check_cannot_stop_a_rogue_result_for_a_name_the_cell_reaches(
    kernel: Kernel, rogue: tuple[str, Path]
) -> None:
    """The limit, as ARCHITECTURE.md states it: a result for a name the cell reaches is a pickle, and a pickle is
    code, so the runtime's pickle runs in the kernel: the check passes it, and its code runs."""
    gpu_class, marker = rogue
    assert kernel.run("target = 'mine'").status == "ok"
    execution = kernel.run(f"%%gpu {gpu_class}\ntarget = target + '!'")
    assert marker.exists(), execution.error_text


def test_an_honest_star_import_comes_home(kernel: Kernel) -> None:
    """`from os.path import *` rebinds `join`, which the cell never spells: the hop restores everything, and the
    result is accepted."""
    assert kernel.run("join = 'mine'\nother = [1]").status == "ok"
    execution = kernel.run("%%gpu h100\nfrom os.path import *\nprint(join('a', 'b'))")
    assert execution.status == "ok", execution.error_text
    assert "a/b" in execution.stream_text("stdout")
    assert kernel.value("join.__name__") == "'join'"
    assert kernel.value("other") == "[1]"
