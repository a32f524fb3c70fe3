"""The worker process through its pipes: ordering, displays, results, errors, interrupts, restore."""

from __future__ import annotations

import base64
import json
import os
import re
import time

from worker_harness import WorkerUnderTest

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def kinds(events):
    return [e["event"] for e in events]


def test_ready_names_the_process(worker):
    assert worker.ready["pid"] == worker.proc.pid


def test_hello_answers_the_workers_offer(worker):
    from kernelhop_proto import DEFAULT_LIMITS, PROTOCOL

    assert worker.hello["protocol"] == PROTOCOL and worker.hello["digest_function"] == "blake3"
    assert worker.hello["max_frame_bytes"] == DEFAULT_LIMITS["max_frame_bytes"]


def test_a_run_before_the_hello_is_refused_and_the_hello_still_works(cache, snapshot_of):
    from kernelhop_proto import offer, to_json

    w = WorkerUnderTest(cache, hello=False)
    try:
        w.send({"op": "run", "run_id": "r1", "code": "print(1)", "snapshot": snapshot_of("x = 1")})
        refused = w.next_event()
        assert refused["event"] == "failed" and refused["code"] == "incompatible", refused
        assert "before the hello" in refused["message"]
        w.send({"op": "hello", **to_json(offer([]))})
        assert w.next_event()["event"] == "hello"
        assert kinds(w.run("print(x)", snapshot_of("x = 1"))) == ["stream", "done"]
    finally:
        w.close()


def test_a_hello_of_another_protocol_is_refused(cache):
    from kernelhop_proto import offer, to_json

    w = WorkerUnderTest(cache, hello=False)
    try:
        w.send({"op": "hello", **{**to_json(offer([])), "protocol": "kernelhop.v0"}})
        refused = w.next_event()
        assert refused["event"] == "failed" and refused["code"] == "incompatible", refused
        assert "kernelhop.v0" in refused["message"]
    finally:
        w.close()


def test_lines_obey_the_agreed_frame_limit(cache, snapshot_of):
    from kernelhop_proto import offer, to_json

    limit = 4096
    w = WorkerUnderTest(cache, hello=to_json(offer([], max_frame_bytes=limit)))
    try:
        code = "print('a' * 20_000)\nfrom IPython.display import HTML, display\ndisplay(HTML('<b>' + 'x' * 10_000))"
        lines = []
        for event in w.run(code, snapshot_of()):
            lines.append(len(json.dumps(event, ensure_ascii=False, separators=(",", ":"))) + 1)
            assert lines[-1] <= limit, event
        events = w.run("print('a' * 20_000)", snapshot_of())
        assert "".join(e["text"] for e in events if e["event"] == "stream") == "a" * 20_000 + "\n"
        events = w.run("from IPython.display import HTML, display\ndisplay(HTML('x' * 10_000))", snapshot_of())
        assert not [e for e in events if e["event"] == "display"]
        (note,) = [e["text"] for e in events if e["event"] == "stream"]
        assert "a display of" in note and f"at most {limit} bytes" in note
    finally:
        w.close()


def test_restored_comes_between_the_restore_and_the_cell(worker, snapshot_of):
    worker.send({"op": "run", "run_id": "r1", "code": "print('cell')", "snapshot": snapshot_of("x = 1")})
    events = list(worker.events_until_final(restored=True))
    assert kinds(events) == ["restored", "stream", "done"], events
    assert events[0]["run_id"] == "r1"


def test_output_keeps_the_cells_order(worker, snapshot_of):
    code = "\n".join(
        [
            "import sys",
            "print('one')",
            "print('two', file=sys.stderr)",
            "from IPython.display import display, Markdown",
            "display(Markdown('**three**'))",
            "print('four')",
            "21 * 2",
        ]
    )
    events = worker.run(code, snapshot_of())
    assert [(e["event"], e.get("name"), e.get("text")) for e in events[:4] if e["event"] == "stream"] == [
        ("stream", "stdout", "one\n"),
        ("stream", "stderr", "two\n"),
        ("stream", "stdout", "four\n"),
    ]
    assert kinds(events) == ["stream", "stream", "display", "stream", "result", "done"]
    assert events[2]["data"]["text/markdown"] == "**three**"
    assert events[4]["data"]["text/plain"] == "42"
    assert all(e["run_id"] == "r1" for e in events)
    assert events[-1]["status"] == "ok"
    assert set(events[-1]["timings"]) == {"restore_s", "run_s", "capture_s"}


def test_bang_command_output_is_a_stream_event(worker, snapshot_of):
    events = worker.run("!echo from-the-shell", snapshot_of())
    text = "".join(e["text"] for e in events if e["event"] == "stream")
    assert "from-the-shell" in text


def test_input_says_a_gpu_cell_cannot_ask_the_notebook(worker, snapshot_of):
    for call in ("input('name? ')", "__import__('getpass').getpass()"):
        events = worker.run(call, snapshot_of())
        [error] = [e for e in events if e["event"] == "error"]
        # ipykernel's type for a frontend without stdin, so code that handles that case works here too.
        assert error["ename"] == "StdinNotImplementedError", error
        assert "%%gpu" in error["evalue"] and "local cell" in error["evalue"]


def test_matplotlib_figure_is_a_png_display(worker, snapshot_of):
    events = worker.run("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nNone", snapshot_of())
    displays = [e for e in events if e["event"] == "display"]
    assert len(displays) == 1, events
    png = base64.b64decode(displays[0]["data"]["image/png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert events[-1]["status"] == "ok"


def test_exception_is_an_error_event_and_state_before_it_is_captured(worker, snapshot_of, cache):
    from kernelhop_snapshot import Capturer, Digest, DirectoryBlobStore, Manifest

    events = worker.run("before = 7\ndef f():\n    return 1 / 0\nf()", snapshot_of("x = 1"))
    assert kinds(events) == ["error", "done"]
    error = events[0]
    assert error["ename"] == "ZeroDivisionError"
    assert error["evalue"] == "division by zero"
    plain = ANSI.sub("", "\n".join(error["traceback"]))
    assert "return 1 / 0" in plain and "ZeroDivisionError" in plain
    assert events[1]["status"] == "error"
    store = DirectoryBlobStore(cache)
    ns = Capturer(store).restore(Manifest.from_bytes(store.get(Digest.parse(events[1]["snapshot"]))))
    assert ns["before"] == 7 and ns["x"] == 1


def test_sigint_interrupts_a_sleeping_cell_within_2s(worker, snapshot_of):
    worker.send(
        {
            "op": "run",
            "run_id": "r1",
            "code": "import time\nprint('sleeping')\ntime.sleep(60)",
            "snapshot": snapshot_of(),
        }
    )
    first = worker.next_event()
    assert first["event"] == "stream" and first["text"] == "sleeping\n"
    started = time.monotonic()
    worker.interrupt()
    rest = list(worker.events_until_final(timeout=5))
    assert kinds(rest) == ["error", "done"]
    assert time.monotonic() - started < 2
    assert rest[0]["ename"] == "KeyboardInterrupt"
    assert rest[1]["status"] == "error"
    # The worker survives an interrupt and serves the next run.
    assert kinds(worker.run("print('again')", snapshot_of(), run_id="r2")) == ["stream", "done"]


def test_stdin_eof_ends_an_idle_worker(worker):
    worker.proc.stdin.close()
    assert worker.proc.wait(timeout=5) == 0


def test_stdin_eof_ends_a_busy_worker(worker, snapshot_of):
    worker.send(
        {"op": "run", "run_id": "r1", "code": "import time\nprint('busy')\ntime.sleep(60)", "snapshot": snapshot_of()}
    )
    assert worker.next_event()["text"] == "busy\n"
    worker.proc.stdin.close()
    assert worker.proc.wait(timeout=5) == 0


def test_restores_a_real_snapshot_and_captures_the_change(worker, snapshot_of, cache):
    from kernelhop_snapshot import Capturer, Digest, DirectoryBlobStore, Manifest

    setup = "\n".join(
        [
            "import numpy as np",
            "arr = np.arange(100_000, dtype=np.float64)",
            "view = arr[10:20]",
            "def double(v):",
            "    return v * 2",
        ]
    )
    snapshot = snapshot_of(setup)
    events = worker.run("total = double(arr).sum()\nprint(total, view[0])\nview[0] = -1", snapshot)
    assert events[0]["text"] == "9999900000.0 10.0\n"
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "ok", events
    assert done["snapshot"] in done["new_blobs"]
    store = DirectoryBlobStore(cache)
    ns = Capturer(store).restore(Manifest.from_bytes(store.get(Digest.parse(done["snapshot"]))))
    assert ns["total"] == 9999900000.0
    assert ns["arr"][10] == -1 and ns["view"][0] == -1


def test_each_run_starts_from_its_own_snapshot(worker, snapshot_of):
    worker.run("leftover = 1", snapshot_of("x = 1"))
    events = worker.run("print('leftover' in globals(), x)", snapshot_of("x = 2"), run_id="r2")
    assert events[0]["text"] == "False 2\n"


def test_missing_chunk_is_restore_failed_naming_it(worker, snapshot_of, cache):
    snapshot = snapshot_of("import numpy as np\nbig = np.ones(1000)")
    chunk = _first_chunk(cache, snapshot)
    os.remove(os.path.join(cache, chunk[:2], chunk.split("/")[0]))
    events = worker.run("print(1)", snapshot)
    assert kinds(events) == ["failed"]
    assert events[0]["code"] == "restore_failed"
    assert chunk.split("/")[0] in events[0]["message"]


def _damage(cache, chunk: str) -> None:
    """Overwrite the first byte of a cached chunk, as a damaged disk would."""
    path = os.path.join(cache, chunk[:2], chunk.split("/")[0])
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"X")


def test_corrupt_chunk_is_restore_failed(worker, snapshot_of, cache):
    snapshot = snapshot_of("import numpy as np\nbig = np.ones(1000)")
    _damage(cache, _first_chunk(cache, snapshot))
    events = worker.run("print(1)", snapshot)
    assert kinds(events) == ["failed"] and events[0]["code"] == "restore_failed", events


def test_preload_failure_only_warns(cache):
    w = WorkerUnderTest(cache, env={"KERNELHOP_PRELOAD": "numpy,no_such_module_xyz"})
    try:
        assert w.ready["event"] == "ready"
        w.proc.stdin.close()
        w.proc.wait(timeout=5)
        assert b"could not preload 'no_such_module_xyz'" in w.proc.stderr.read()
    finally:
        w.close()


def test_a_corrupt_chunk_of_a_large_buffer_is_restore_failed_naming_it(worker, snapshot_of, cache):
    # 8 MiB: restored into tracked memory, its chunks verified by the pool before they are written there.
    snapshot = snapshot_of("import numpy as np\nbig = np.arange(1 << 20, dtype=np.float64)")
    with open(os.path.join(cache, snapshot[:2], snapshot.split("/")[0]), "rb") as f:
        chunk = json.loads(f.read())["groups"][0]["buffers"][0]["chunks"][5]
    _damage(cache, chunk)
    events = worker.run("print(big[0])", snapshot)
    assert kinds(events) == ["failed"] and events[0]["code"] == "restore_failed", events
    assert events[0]["corrupt_blob"] == chunk, events


def _first_chunk(cache: str, snapshot: str) -> str:
    """The first chunk the manifest (canonical JSON) names."""
    digest = snapshot.split("/")[0]
    with open(os.path.join(cache, digest[:2], digest), "rb") as f:
        return json.loads(f.read())["groups"][0]["pickle"]["chunks"][0]


def test_warm_worker_loads_only_what_changed(worker, snapshot_of):
    first = worker.run("import numpy as np\nbig = np.ones(1_000_000)\nbig_id = id(big)\nsmall = 1", snapshot_of())
    assert first[-1]["status"] == "ok", first
    # The next cell's snapshot is the one the last cell left: `big` is not reloaded, so it keeps its identity.
    second = worker.run("print(id(big) == big_id, small)\nsmall = 2", first[-1]["snapshot"], run_id="r2")
    assert second[0]["text"] == "True 1\n", second
    # A snapshot from elsewhere replaces what differs and drops what it lacks.
    third = worker.run(
        "print(sorted(k for k in ('big', 'small', 'x') if k in globals()), x)", snapshot_of("x = 5"), run_id="r3"
    )
    assert third[0]["text"] == "['x'] 5\n", third


def test_a_bad_command_line_is_reported_and_the_worker_goes_on(worker, snapshot_of):
    worker.proc.stdin.write(b"this is not json\n")
    worker.proc.stdin.flush()
    event = worker.next_event()
    assert event["event"] == "failed" and event["code"] == "bad_command" and event["run_id"] is None
    assert kinds(worker.run("print('still here')", snapshot_of())) == ["stream", "done"]
