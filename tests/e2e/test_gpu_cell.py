"""`%%gpu` end to end: real ipykernel → real gateway (ws) → real runtime (gRPC) → real Python worker, on loopback.

The runtime poses as `h100` on this CPU-only machine (`--class h100`): the GPU is the one part faked here.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import time
from pathlib import Path

import nbformat
import pytest
from kernelhop_testing import Kernel, Stack, launch_stack, stored_blobs
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


def test_example_notebook_runs_top_to_bottom(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(ROOT / "examples" / "hello-gpu.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    outputs = {i: cell.get("outputs", []) for i, cell in enumerate(nb.cells)}
    remote_cell = next(i for i, c in enumerate(nb.cells) if c.source.startswith("%%gpu h100\ny = x * 2"))
    texts = "".join(o.get("text", "") for o in outputs[remote_cell])
    assert "remote" in texts
    local_pid = "".join(o.get("text", "") for o in outputs[remote_cell - 1]).split()[-1]
    remote_pid = texts.split("remote", 1)[1].split()[0]
    assert local_pid != remote_pid, "the %%gpu cell ran in the local kernel"
    sums = [o for o in outputs[remote_cell + 1] if o.output_type == "execute_result"]
    assert sums and sums[0]["data"]["text/plain"] == "np.int64(90)"


def test_state_goes_out_and_changes_come_home(kernel: Kernel) -> None:
    setup = kernel.run(
        "import numpy as np\nx = np.arange(10)\nkeep = {'a': 1}\ngone = 'bye'\nshared = [1]\nalias = shared"
    )
    assert setup.status == "ok", setup.error_text
    remote = kernel.run("%%gpu h100\ny = x * 2\nkeep['b'] = 2\ndel gone\nshared.append(2)\nprint(int(x.sum()))\ny")
    assert remote.status == "ok", remote.error_text
    assert remote.stream_text("stdout").strip().splitlines()[0] == "45"
    results = remote.outputs("execute_result")
    assert results and "array([ 0,  2,  4,  6,  8, 10, 12, 14, 16, 18])" in results[0]["data"]["text/plain"]
    assert kernel.value("int(y.sum())") == "90"
    assert kernel.value("keep") == "{'a': 1, 'b': 2}"
    assert kernel.value("'gone' in globals()") == "False"
    assert kernel.value("(shared, alias is shared)") == "([1, 2], True)"


def test_output_streams_live_and_in_order(kernel: Kernel) -> None:
    code = (
        "%%gpu h100\nimport sys, time\nprint('first', flush=True)\ntime.sleep(2)\n"
        "print('second')\nprint('third', file=sys.stderr)\nprint('fourth')"
    )
    execution = kernel.run(code)
    assert execution.status == "ok", execution.error_text
    streams = [(t, m["content"]) for t, m in execution.messages if m["msg_type"] == "stream"]
    first_at = next(t for t, c in streams if "first" in c["text"])
    assert execution.finished_at - first_at > 1.5, "output was held back until the remote cell ended"
    lines = [
        line for _, c in streams for line in c["text"].splitlines() if line in {"first", "second", "third", "fourth"}
    ]
    assert lines == ["first", "second", "third", "fourth"]
    assert [c["name"] for _, c in streams if "third" in c["text"]] == ["stderr"]


def test_matplotlib_png_comes_back(kernel: Kernel) -> None:
    execution = kernel.run("%%gpu h100\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    assert execution.status == "ok", execution.error_text
    pngs = [d["data"]["image/png"] for d in execution.outputs("display_data") if "image/png" in d["data"]]
    assert pngs and base64.b64decode(pngs[0]).startswith(b"\x89PNG")


def test_remote_exception_fails_the_cell_with_the_remote_traceback(kernel: Kernel) -> None:
    kernel.run("before = 1")
    execution = kernel.run("%%gpu h100\nbefore = 2\ndef inner():\n    return 1 / 0\ninner()")
    assert execution.status == "error"
    text = execution.error_text
    assert "ZeroDivisionError" in text and "inner" in text
    # As with a local cell, what ran before the exception stays done.
    assert kernel.value("before") == "2"


def test_interrupt_stops_the_remote_cell_quickly(kernel: Kernel) -> None:
    kernel.run("marker = 'kept'")
    sent: list[float] = []

    def on_message(msg: dict) -> None:
        if msg["msg_type"] == "stream" and "sleeping" in msg["content"]["text"] and not sent:
            sent.append(time.monotonic())
            kernel.manager.interrupt_kernel()

    execution = kernel.run(
        "%%gpu h100\nmarker = 'changed'\nprint('sleeping', flush=True)\nimport time\ntime.sleep(60)",
        on_message=on_message,
    )
    assert sent, "the remote cell never started"
    assert execution.finished_at - sent[0] < 2.5
    assert execution.status == "error" and "KeyboardInterrupt" in execution.error_text
    assert kernel.value("marker") == "'kept'"


def test_unknown_class_lists_what_is_available(kernel: Kernel) -> None:
    kernel.run("value = 7")
    execution = kernel.run("%%gpu a100\nvalue = 8")
    assert execution.status == "error"
    assert "a100" in execution.error_text and "h100" in execution.error_text
    # The message alone, as for any expected failure: no frame of kernelhop's own code.
    [error] = execution.outputs("error")
    assert error["traceback"] == [f"GatewayError: {error['evalue']}"], error["traceback"]
    assert kernel.value("value") == "7"


def test_timeout_leaves_state_unchanged(kernel: Kernel) -> None:
    kernel.run("t = 'before'")
    execution = kernel.run("%%gpu h100 --timeout 1\nt = 'after'\nimport time\ntime.sleep(30)", timeout=30)
    assert execution.status == "error" and "timeout" in execution.error_text.lower()
    assert kernel.value("t") == "'before'"


def test_unpicklable_variable_is_named_and_stays_local(kernel: Kernel, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    kernel.run(f"fh = open({str(path)!r}, 'w')\nn = 1")
    # The cell reaches fh (its name in a string) without touching it; names out of its reach are not warned about.
    execution = kernel.run("%%gpu h100\nn = n + 1\nlabel = 'fh'")
    assert execution.status == "ok", execution.error_text
    warning = execution.stream_text()
    assert "'fh' stays local" in warning and "TextIOWrapper" in warning and "for writing ('w')" in warning
    assert kernel.value("(n, fh.closed)") == "(2, False)"


def test_what_only_the_runtime_can_rebuild_stays_there_and_goes_back(kernel: Kernel) -> None:
    # A module on the runtime's path only, as a GPU-only package (cupy, flash-attn) is on a GPU host only: the cell
    # writes it where only its worker sees it (a sandboxed worker sees nothing of this host's /tmp).
    path = (
        "import pathlib, sys, tempfile\nsite = pathlib.Path(tempfile.mkdtemp())\n"
        "(site / 'kh_e2e_gpu_only.py').write_text('class Model:\\n    def __init__(self, w):\\n        self.w = w\\n')\n"
        "sys.path.insert(0, str(site))\ndel site"
    )
    execution = kernel.run(f"%%gpu h100\n{path}\nfrom kh_e2e_gpu_only import Model\nmodel = Model(41)\ny = 2")
    assert execution.status == "ok", execution.error_text
    assert "variable 'model' stays on the runtime" in execution.stream_text()
    assert "No module named 'kh_e2e_gpu_only'" in execution.stream_text()
    assert kernel.value("y") == "2"
    touched = kernel.run("model.w")
    assert touched.status == "error"
    assert "RemoteOnlyError" in touched.error_text and "lives on the runtime only" in touched.error_text
    # The next hop sends it back as the runtime left it.
    execution = kernel.run("%%gpu h100\nz = model.w + 1\nmodel.w = 0")
    assert execution.status == "ok", execution.error_text
    assert kernel.value("z") == "42"


def test_what_only_the_kernel_can_rebuild_stays_there_and_the_cell_runs(kernel: Kernel, tmp_path: Path) -> None:
    # A module on the kernel's path only, as a notebook's own utils.py is.
    (tmp_path / "kh_e2e_kernel_only.py").write_text("class Config:\n    def __init__(self, v):\n        self.v = v\n")
    kernel.run(f"import sys\nsys.path.insert(0, {str(tmp_path)!r})")
    kernel.run("from kh_e2e_kernel_only import Config\ncfg = Config(3)\nn = 1")
    # --eager restores the whole state, cfg included, though the cell does not name it.
    execution = kernel.run("%%gpu h100 --eager\nn = n + 1")
    assert execution.status == "ok", execution.error_text
    assert "variable 'cfg' stays in the kernel" in execution.stream_text()
    assert kernel.value("(n, cfg.v, type(cfg).__name__)") == "(2, 3, 'Config')"  # the kernel's own object, kept
    # A cell that does not reach cfg hides it on the worker; the next that does gets the placeholder again.
    assert kernel.run("%%gpu h100\nn = n + 1").status == "ok"
    touched = kernel.run("%%gpu h100\nw = cfg.v")
    assert touched.status == "error"
    assert "lives in the kernel only" in touched.error_text
    assert "did not come home" not in touched.stream_text()
    assert kernel.value("(n, cfg.v)") == "(3, 3)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_gateway_names_the_url_and_how_to_start_one(stack: Stack, make_kernel) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws/v1"
    kernel = make_kernel(stack.env(KERNELHOP_GATEWAY=url))
    kernel.run("v = 1")
    execution = kernel.run("%%gpu h100\nv = 2")
    assert execution.status == "error"
    assert url in execution.error_text and "kernelhop up" in execution.error_text
    assert kernel.value("v") == "1"


def test_wrong_token_is_refused(stack: Stack, make_kernel) -> None:
    kernel = make_kernel(stack.env(KERNELHOP_TOKEN="not-the-token"))
    kernel.run("v = 1")
    execution = kernel.run("%%gpu h100\nv = 2")
    assert execution.status == "error" and "token" in execution.error_text.lower()
    assert kernel.value("v") == "1"


def test_runtime_killed_mid_cell(tmp_path: Path, make_kernel) -> None:
    own = launch_stack(tmp_path)
    try:
        kernel = make_kernel(own.env())
        kernel.run("import numpy as np\nstate = np.arange(5)")

        def on_message(msg: dict) -> None:
            if msg["msg_type"] == "stream" and "working" in msg["content"]["text"]:
                os.kill(own.runtime.process.pid, signal.SIGKILL)

        execution = kernel.run(
            "%%gpu h100\nstate = state * 100\nprint('working', flush=True)\nimport time\ntime.sleep(60)",
            on_message=on_message,
            timeout=60,
        )
        assert execution.status == "error"
        assert "runtime" in execution.error_text.lower()
        assert kernel.value("state.tolist()") == "[0, 1, 2, 3, 4]"
    finally:
        own.stop()


def test_gateway_refuses_a_corrupt_chunk_and_stores_nothing(stack: Stack) -> None:
    from blake3 import blake3
    from websockets.sync.client import connect

    good = b"kernelhop chunk" * 100
    digest = f"{blake3(good).hexdigest()}/{len(good)}"
    payload = b"tampered chunk!" * 100  # same size, other bytes
    header = json.dumps(
        {"id": 1, "op": "put_blobs", "blobs": [{"digest": digest, "offset": 0, "length": len(payload)}]}
    ).encode()
    with connect(stack.ws_url, additional_headers={"Authorization": f"Bearer {stack.token}"}) as ws:
        ws.send(len(header).to_bytes(4, "big") + header + payload)
        reply = json.loads(ws.recv(timeout=10))
        assert reply["re"] == 1
        assert reply["results"][0]["code"] == "digest_mismatch"
        ws.send(json.dumps({"id": 2, "op": "find_missing", "digests": [digest]}))
        assert json.loads(ws.recv(timeout=10))["missing"] == [digest]
    assert digest.split("/")[0] not in stored_blobs(stack.data / "gateway" / "cas")
