"""`%gpu CLASS` (issue 11): every following cell runs on the session's warm worker until `%gpu off`."""

from __future__ import annotations

from kernelhop_testing import Kernel


def test_gpu_class_line_magic_runs_every_cell_there_until_off(kernel: Kernel) -> None:
    """`%gpu h100`: the following cells run on the runtime's warm worker of the session, the namespace follows them
    home after each, and `%gpu off` goes on here with it."""
    here = kernel.value("__import__('os').getpid()")
    assert kernel.run("%gpu h100 -q").status == "ok"
    first = kernel.run("import os\npid1 = os.getpid()\ndata = list(range(1000))")
    assert first.status == "ok", first.error_text
    second = kernel.run("pid2 = os.getpid()\ndata.append(-1)")
    assert second.status == "ok", second.error_text
    assert kernel.run("%gpu off").status == "ok"
    assert kernel.value("pid1 == pid2 != os.getpid()") == "True", "both cells ran in the session's warm worker"
    assert kernel.value("os.getpid()") == here
    assert kernel.value("(len(data), data[-1])") == "(1001, -1)"
