"""`%%gpu CLASS --background` end to end: a real ipykernel, gateway, runtime (posing as h100) and worker. The cell
returns while its run goes on, the run's output lands in that cell, the result is applied before a later cell,
`wait` and `cancel` do what they say. (What is refused when a name changed here meanwhile: tests/kernelhop.)"""

from __future__ import annotations

import queue
import time

from kernelhop_testing import Kernel


def test_the_cell_returns_while_its_run_goes_on_and_its_output_lands_in_that_cell(kernel: Kernel) -> None:
    assert kernel.run("x = 41").status == "ok"
    # The remote cell never ends on its own: the magic returning at all shows it does not wait for the run.
    cell = kernel.run("%%gpu h100 --background\nprint('tick', x, flush=True)\nimport time\nwhile True: time.sleep(0.1)")
    assert cell.status == "ok", cell.error_text
    (out,) = cell.outputs("execute_result")
    assert "background hop on h100" in out["data"]["text/plain"]
    parent = cell.reply["parent_header"]["msg_id"]
    streamed = ""
    deadline = time.monotonic() + 90
    while "tick 41" not in streamed:
        try:
            msg = kernel.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no remote output reached the cell; got {streamed!r}") from None
        if msg["msg_type"] == "stream" and msg["parent_header"].get("msg_id") == parent:
            streamed += msg["content"]["text"]
    # The kernel is free meanwhile; another hop is told to wait for this one.
    local = kernel.run("z = x + 1\nprint(z)")
    assert local.status == "ok" and local.stream_text("stdout").strip() == "42"
    refused = kernel.run("%%gpu h100\nq = 1")
    assert refused.status == "error" and "%gpu cancel" in refused.error_text
    cancelled = kernel.run("%gpu cancel")
    assert cancelled.status == "ok" and "nothing applied" in cancelled.stream_text("stdout")
    assert kernel.value("'q' in dir()") == "False"


def test_the_result_is_applied_before_a_later_cell_and_wait_and_errors(kernel: Kernel) -> None:
    assert kernel.run("x = 41").status == "ok"
    assert kernel.run("%%gpu h100 --background\ny = x + 1").status == "ok"
    assert kernel.run("h = _").status == "ok"
    said = ""
    for _ in range(600):  # each cell start is a safe point: the one after the run ended applies it
        check = kernel.run("print(h.status)")
        said += check.stream_text("stderr")
        if check.stream_text("stdout").strip() == "applied":
            break
        time.sleep(0.1)
    assert "came home: y" in said, said
    assert kernel.value("y") == "42"
    # wait() applies at once and returns; a remote error is raised by wait(), after what it changed came home.
    assert kernel.run("%%gpu h100 --background\nw = y * 2\nraise ValueError('boom')").status == "ok"
    waited = kernel.run("h2 = _\nh2.wait()")
    assert waited.status == "error" and waited.outputs("error")[0]["ename"] == "ValueError"
    assert kernel.value("w") == "84"
