"""The worker on a CUDA host: restored CPU state moves to the device, device state comes home. Skipped without CUDA."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_state_made_in_a_cell_comes_home(worker, snapshot_of, cache):
    from kernelhop_snapshot import Capturer, DeviceMap, Digest, DirectoryBlobStore, Manifest

    class CpuOnly(DeviceMap):
        """The kernel that gets the state back may have no GPU."""

        def available(self, device: str) -> bool:
            return device == "cpu"

    snapshot = snapshot_of("import torch\nx = torch.arange(12, dtype=torch.float32).reshape(3, 4)")
    code = "import torch\nw = x.cuda() @ x.cuda().T\nptr = w.data_ptr()\nprint(w.device.type, float(w.sum()))"
    events = worker.run(code, snapshot)
    assert events[0]["text"] == "cuda 1134.0\n", events
    done = events[-1]
    assert done["status"] == "ok", events

    store = DirectoryBlobStore(cache)
    manifest = Manifest.from_bytes(store.get(Digest.parse(done["snapshot"])))
    on_gpu = Capturer(store).restore(manifest)
    assert on_gpu["w"].device.type == "cuda"
    on_cpu = Capturer(store, devices=CpuOnly()).restore(manifest)
    assert on_cpu["w"].device.type == "cpu" and float(on_cpu["w"].sum()) == 1134.0

    # The session's next cell on the same worker: `w` is unchanged, so it stays the same CUDA tensor.
    again = worker.run("print(w.device.type, w.data_ptr() == ptr)", done["snapshot"], run_id="r2")
    assert again[0]["text"] == "cuda True\n", again


def test_sigint_stops_a_busy_gpu_loop_within_2s(worker, snapshot_of):
    code = "\n".join(
        [
            "import torch",
            "a = torch.randn(1024, 1024, device='cuda')",
            "print('looping')",
            "while True:",
            "    a = (a @ a).tanh()",
            "    torch.cuda.synchronize()",
        ]
    )
    worker.send({"op": "run", "run_id": "r1", "code": code, "snapshot": snapshot_of()})
    assert worker.next_event(timeout=60)["text"] == "looping\n"
    time.sleep(0.5)
    started = time.monotonic()
    worker.interrupt()
    stopped = worker.next_event(timeout=5)
    # The cell stops at once; capturing what it left (timed separately) follows.
    assert time.monotonic() - started < 2
    assert stopped["event"] == "error" and stopped["ename"] == "KeyboardInterrupt", stopped
    assert list(worker.events_until_final(timeout=60))[-1]["event"] == "done"
