"""The hop display's numbers and text (kernelhop/magics/hop_display.py), and what it publishes."""

from kernelhop.magics import hop_display
from kernelhop.magics.hop_display import MIME_TYPE, HopDisplay, eta_s, plain_text, split_of

TIMINGS = {
    "capture_s": 0.1,
    "upload_s": 0.5,
    "queue_s": 1.2,  # holds the runtime's fetch: `started` comes after it
    "remote_s": 2.0,
    "home_s": 0.3,
    "total_s": 4.1,
    "runtime_fetch_s": 1.0,
    "runtime_restore_s": 0.4,
    "runtime_run_s": 1.1,
    "runtime_total_s": 3.05,
}


def test_split_moves_the_runtime_fetch_out_of_the_queue_and_adds_up():
    split = split_of(TIMINGS)
    assert list(split) == ["capture", "upload", "queue", "restore", "run", "return"]
    assert abs(split["queue"] - 0.2) < 1e-9
    assert abs(split["restore"] - 1.4) < 1e-9
    assert split["run"] == 1.1
    assert abs(split["return"] - 0.8) < 1e-9  # 2.0 - 0.4 - 1.1 remote, plus 0.3 home
    assert abs(sum(split.values()) - TIMINGS["total_s"]) < 1e-9


def test_split_without_the_runtime_timings_counts_the_remote_time_as_run():
    split = split_of({"capture_s": 0.1, "remote_s": 2.0, "queue_s": 0.5})
    assert split["run"] == 2.0 and split["restore"] == 0.0 and split["queue"] == 0.5


def test_eta_from_the_rate_so_far():
    assert eta_s(0, 100, 1.0) is None
    assert eta_s(25, 100, 1.0) == 3.0
    assert eta_s(100, 100, 1.0) == 0.0


def test_plain_text_for_other_frontends():
    state = {
        "gpu_class": "h100",
        "runtime": "rt-1",
        "simulated": True,
        "phase": "upload",
        "elapsed_s": 2.0,
        "bytes_done": 1 << 20,
        "bytes_total": 4 << 20,
        "eta_s": 3.0,
    }
    assert plain_text(state) == (
        "[kernelhop] h100 on runtime rt-1 (simulated on CPU): upload 1.0 MiB of 4.0 MiB, about 3 s left · 2 s"
    )


def test_a_display_in_a_kernel_updates_in_place_and_ends_once(monkeypatch):
    published = []

    class Handle:
        def update(self, bundle, raw):
            published.append(bundle)

    monkeypatch.setattr(hop_display, "display", lambda bundle, raw, display_id: published.append(bundle) or Handle())
    shown = HopDisplay("h100", enabled=True)
    shown.phase("upload", total_bytes=100)
    shown.progress(100)
    shown.started({"runtime": "rt-1", "simulated": True})
    shown.finished(TIMINGS, "ok")
    shown.failed(RuntimeError("late"))  # after the end: ignored
    states = [b[MIME_TYPE] for b in published]
    assert [s["phase"] for s in states] == ["capture", "upload", "upload", "run", "done"]
    assert len({s["id"] for s in states}) == 1
    assert states[-1]["gpu_s"] == 3.05 and states[-1]["runtime"] == "rt-1"
    assert published[-1]["text/plain"].startswith("[kernelhop] h100 on runtime rt-1 (simulated on CPU) · 4.10 s")


def test_outside_a_kernel_nothing_is_published(monkeypatch):
    monkeypatch.setattr(hop_display, "display", lambda *a, **k: (_ for _ in ()).throw(AssertionError("published")))
    off = HopDisplay.open(object(), "h100")
    off.phase("upload", total_bytes=10)
    off.finished(TIMINGS, "ok")


def test_put_blobs_reports_the_bytes_sent_after_each_frame(gateway, monkeypatch):
    from kernelhop_fake_gateway import TOKEN, digest_of_bytes

    from kernelhop.client import gateway as gateway_client

    monkeypatch.setattr(gateway_client, "PUT_FRAME_BYTES", 10)
    client = gateway_client.GatewayConnection(gateway.url, TOKEN, open_timeout=5, reply_timeout=10)
    try:
        seen: list[int] = []
        blobs = {digest_of_bytes(t.encode()): t.encode() for t in ["aaaaaa", "bbbbbb", "cc", "dddddddddddddddd"]}
        assert client.put_blobs(blobs, seen.append) == 30
        assert seen == [6, 14, 30]
    finally:
        client.close()
