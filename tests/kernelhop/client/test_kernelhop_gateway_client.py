import socket
import time

import pytest
from kernelhop_fake_gateway import TOKEN, FakeGateway, digest_of_bytes, error_reply, send_json

from kernelhop.client import gateway as gateway_client
from kernelhop.client.gateway import (
    GatewayAuthError,
    GatewayConnection,
    GatewayError,
    GatewayUnreachable,
    decode_binary,
    encode_binary,
)


@pytest.fixture
def client(gateway):
    c = GatewayConnection(gateway.url, TOKEN, open_timeout=5, reply_timeout=10)
    yield c
    c.close()


def blob(text: str) -> tuple[str, bytes]:
    data = text.encode()
    return digest_of_bytes(data), data


def test_binary_frame_layout():
    frame = encode_binary({"id": "k1", "op": "put_blobs"}, [b"ab", b"cde"])
    assert frame[:4] == len(b'{"id":"k1","op":"put_blobs"}').to_bytes(4, "big")
    header, payload = decode_binary(frame)
    assert header == {"id": "k1", "op": "put_blobs"}
    assert bytes(payload) == b"abcde"


def test_find_missing_asks_only_about_unknown_digests(gateway, client):
    (d1, b1), (d2, _) = blob("one"), blob("two")
    gateway.blobs[d1] = b1
    assert client.find_missing([d1, d2]) == [d2]
    assert client.find_missing([d1, d2]) == [d2]
    asked = [r["digests"] for r in gateway.requests if r["op"] == "find_missing"]
    assert asked == [[d1, d2], [d2]]


def test_put_blobs_frames_and_batches(gateway, client, monkeypatch):
    monkeypatch.setattr(gateway_client, "PUT_FRAME_BYTES", 10)
    blobs = dict(blob(t) for t in ["aaaaaa", "bbbbbb", "cc", "dddddddddddddddd"])
    assert client.put_blobs(blobs) == sum(len(b) for b in blobs.values())
    assert gateway.blobs == blobs
    frames = [[b["digest"] for b in r["blobs"]] for r in gateway.requests if r["op"] == "put_blobs"]
    assert len(frames) == 3  # 6 | 6+2 | 16 (one blob over the batch size goes alone)
    # Blobs put are known to be there: no need to ask again.
    assert client.find_missing(blobs) == []
    assert "find_missing" not in gateway.ops()


def test_put_blobs_checks_every_status(gateway, client):
    d, data = blob("payload")
    gateway.put_codes[d] = "too_large"
    with pytest.raises(GatewayError, match="refused blob") as e:
        client.put_blobs({d: data})
    assert e.value.code == "too_large"
    assert d not in client.known


def test_put_blobs_pipelined_refusal_fails_and_starts_clean(gateway, client, monkeypatch):
    monkeypatch.setattr(gateway_client, "PUT_FRAME_BYTES", 1)  # one blob per frame, several in flight
    blobs = dict(blob(t) for t in ["one", "two", "three", "four", "five"])
    refused = list(blobs)[1]
    gateway.put_codes[refused] = "quota_exceeded"
    with pytest.raises(GatewayError, match="refused blob") as e:
        client.put_blobs(blobs)
    assert e.value.code == "quota_exceeded"
    assert refused not in client.known
    # Replies to frames still in flight were dropped with the connection: the next request gets its own reply.
    assert client.find_missing([refused]) == [refused]


def test_get_blobs_returns_verified_bytes_in_batches(gateway, client, monkeypatch):
    monkeypatch.setattr(gateway_client, "GET_BATCH_BYTES", 8)
    blobs = dict(blob(t) for t in ["alpha", "beta", "gamma"])
    gateway.blobs.update(blobs)
    assert client.get_blobs(blobs) == blobs
    assert len([r for r in gateway.requests if r["op"] == "get_blobs"]) == 3


def test_get_blobs_refuses_corrupt_bytes(gateway, client):
    d, data = blob("the real bytes")
    gateway.blobs[d] = data
    gateway.get_override[d] = b"something else"
    with pytest.raises(GatewayError, match="arrived corrupt") as e:
        client.get_blobs([d])
    assert e.value.code == "digest_mismatch"


def test_get_blobs_reports_missing(gateway, client):
    d, _ = blob("never stored")
    with pytest.raises(GatewayError, match="does not hold chunk") as e:
        client.get_blobs([d])
    assert e.value.code == "not_found"


def test_wrong_token_is_an_auth_error(gateway):
    c = GatewayConnection(gateway.url, "wrong", source="token from KERNELHOP_TOKEN")
    with pytest.raises(GatewayAuthError) as e:
        c.classes()
    msg = str(e.value)
    assert gateway.url in msg and "refused the token" in msg and "KERNELHOP_TOKEN" in msg
    assert "kernelhop gateway" in msg


def test_missing_token_is_an_auth_error(gateway):
    with pytest.raises(GatewayAuthError, match="needs a token and none is set"):
        GatewayConnection(gateway.url, None).classes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_says_how_to_start_a_gateway():
    url = f"ws://127.0.0.1:{free_port()}/ws/v1"
    with pytest.raises(GatewayUnreachable) as e:
        GatewayConnection(url, TOKEN).classes()
    msg = str(e.value)
    assert f"cannot reach the kernelhop gateway at {url}: connection refused" in msg
    assert "`kernelhop up`" in msg and "`kernelhop gateway`" in msg and "KERNELHOP_GATEWAY" in msg


def test_classes(gateway, client):
    assert client.classes()["h100"]["simulated"] is True


def test_error_reply_carries_code_and_message(gateway, client):
    with pytest.raises(GatewayError) as e:
        client.run(session="s", gpu_class="a100", code="1", manifest="x/1", timeout_s=0).next_event(5)
    assert e.value.code == "unknown_class"
    assert "available now: h100" in str(e.value)


def test_bad_request_without_re_fails_the_pending_request(gateway, client):
    def reply_without_re(gw, conn, msg):
        send_json(conn, error_reply(None, "bad_request", "frame is not JSON"))

    gateway.runner = reply_without_re
    d, data = blob("m")
    gateway.blobs[d] = data
    run = client.run(session="s", gpu_class="h100", code="1", manifest=d, timeout_s=0)
    with pytest.raises(GatewayError, match="frame is not JSON"):
        while run.next_event(5) is None:
            pass


def test_run_yields_events_then_done(gateway, client):
    def runner(gw, conn, msg):
        rid = msg["id"]
        send_json(conn, {"re": rid, "event": "started", "runtime": "rt", "simulated": True})
        send_json(conn, {"re": rid, "event": "stream", "name": "stdout", "text": "hi\n"})
        send_json(conn, {"re": rid, "ok": True, "event": "done", "status": "ok", "snapshot": msg["snapshot"]})

    gateway.runner = runner
    d, data = blob("m")
    gateway.blobs[d] = data
    run = client.run(session="s", gpu_class="h100", code="print('hi')", manifest=d, timeout_s=3)
    events = []
    while not events or events[-1]["event"] != "done":
        ev = run.next_event(5)
        if ev is not None:
            events.append(ev)
    assert [e["event"] for e in events] == ["started", "stream", "done"]
    sent = next(r for r in gateway.requests if r["op"] == "run")
    assert {k: sent[k] for k in ("session", "gpu_class", "code", "snapshot", "timeout_s")} == {
        "session": "s",
        "gpu_class": "h100",
        "code": "print('hi')",
        "snapshot": d,
        "timeout_s": 3,
    }


def test_cancel_waits_for_the_final_reply(gateway, client):
    def runner(gw, conn, msg):
        send_json(conn, {"re": msg["id"], "event": "started", "runtime": "rt"})
        gw.cancelled.wait(10)
        send_json(conn, error_reply(msg["id"], "cancelled", "cancelled by the user"))

    gateway.runner = runner
    d, data = blob("m")
    gateway.blobs[d] = data
    run = client.run(session="s", gpu_class="h100", code="x", manifest=d, timeout_s=0)
    assert run.next_event(5)["event"] == "started"
    final = run.cancel(2.0)
    assert final["error"]["code"] == "cancelled"
    cancel = next(r for r in gateway.requests if r["op"] == "cancel")
    assert cancel["run"] == run.id
    # The connection is still good for the next request.
    assert "h100" in client.classes()


def test_reconnects_after_the_gateway_dropped_an_idle_connection(gateway, client):
    assert client.classes()
    client._ws.close()
    time.sleep(0.05)
    assert client.classes()
    assert gateway.connections == 2


def test_connection_lost_mid_run_is_a_gateway_error():
    gw = FakeGateway()
    try:

        def runner(g, conn, msg):
            send_json(conn, {"re": msg["id"], "event": "started", "runtime": "rt"})
            conn.close(1011, "runtime host went away")

        gw.runner = runner
        d, data = blob("m")
        gw.blobs[d] = data
        c = GatewayConnection(gw.url, TOKEN)
        run = c.run(session="s", gpu_class="h100", code="x", manifest=d, timeout_s=0)
        with pytest.raises(GatewayError, match="closed") as e:
            while True:
                run.next_event(5)
        assert e.value.code == "connection_lost"
        assert "local namespace is unchanged" in str(e.value)
    finally:
        gw.close()
