"""The WebSocket contract: the same cases, byte for byte on the wire, against the real gateway (with a real runtime
posing as h100 and its real worker) and against the fake the kernel's tests use (tests/support, also on the real
worker). A case that passes on one and fails on the other is a fake that lies, or a gateway that changed."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from kernelhop_fake_gateway import TOKEN, FakeGateway
from kernelhop_proto import DIGEST_FUNCTION, PROTOCOL, decode_tagged, offer, to_json
from kernelhop_proto.v1 import gateway_pb2
from kernelhop_snapshot import Capturer, Manifest, MemoryBlobStore
from kernelhop_testing import launch_stack
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect


class Peer:
    def __init__(self, kind: str, url: str, token: str) -> None:
        self.kind, self.url, self.token = kind, url, token

    def connect(self, token: str | None = None) -> ClientConnection:
        return connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {token or self.token}"},
            max_size=None,
            compression=None,
            open_timeout=10,
        )


@pytest.fixture(scope="module", params=["gateway", "fake"])
def peer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    if request.param == "gateway":
        stack = launch_stack(tmp_path_factory.mktemp("contract"), capacity=1)
        try:
            yield Peer("gateway", stack.ws_url, stack.token)
        finally:
            stack.stop()
    else:
        fake = FakeGateway()
        try:
            yield Peer("fake", fake.url, TOKEN)
        finally:
            fake.close()


@pytest.fixture
def ws(peer: Peer) -> Iterator[ClientConnection]:
    with peer.connect() as conn:
        yield conn


def request(ws: ClientConnection, rid: Any, op: str, **fields: Any) -> dict[str, Any]:
    ws.send(json.dumps({"id": rid, "op": op, **fields}))
    return reply_to(ws, rid)


def reply_to(ws: ClientConnection, rid: Any) -> dict[str, Any]:
    while True:
        msg = read(ws)
        if msg.get("re") == rid:
            return msg


def read(ws: ClientConnection) -> dict[str, Any]:
    raw = ws.recv(timeout=120)
    if isinstance(raw, bytes):
        (n,) = struct.unpack_from(">I", raw)
        return {**json.loads(raw[4 : 4 + n]), "_payload": raw[4 + n :]}
    return json.loads(raw)


def put_blobs(ws: ClientConnection, rid: Any, blobs: dict[str, bytes]) -> dict[str, Any]:
    items, offset = [], 0
    for d, data in blobs.items():
        items.append({"digest": d, "offset": offset, "length": len(data)})
        offset += len(data)
    head = json.dumps({"id": rid, "op": "put_blobs", "blobs": items}).encode()
    ws.send(struct.pack(">I", len(head)) + head + b"".join(blobs.values()))
    return reply_to(ws, rid)


def capture(ns: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
    store = MemoryBlobStore()
    captured = Capturer(store).capture(ns)
    return str(captured.digest), {str(d): store.get(d) for d in store.digests()}


def run(ws: ClientConnection, rid: str, code: str, snapshot: str, **fields: Any) -> tuple[list[dict], dict]:
    """The run's events (each held to RunEvent) and its final reply."""
    ws.send(json.dumps({"id": rid, "op": "run", "session": f"s-{rid}", "gpu_class": "h100", "code": code,
                        "snapshot": snapshot, "timeout_s": 60, **fields}))
    events = []
    while True:
        msg = reply_to(ws, rid)
        if "ok" in msg:
            return events, msg
        decode_tagged(gateway_pb2.RunEvent, "event", {k: v for k, v in msg.items() if k != "re"})
        events.append(msg)


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["ok"] is False, reply
    json_format.ParseDict(reply["error"], gateway_pb2.Error())
    return reply["error"]


def test_hello_answers_capabilities(ws):
    reply = request(ws, "h", "hello", capabilities=to_json(offer(["zstd"])))
    assert reply["ok"] is True
    caps = json_format.ParseDict(reply["capabilities"], gateway_pb2.HelloReply().capabilities)
    assert (caps.protocol, caps.digest_function) == (PROTOCOL, DIGEST_FUNCTION)
    assert caps.max_frame_bytes > 0 and caps.max_batch_bytes > 0 and caps.max_blobs_in_flight > 0


def test_hello_of_another_protocol_is_incompatible(ws):
    theirs = to_json(offer([]))
    theirs["protocol"] = "kernelhop.v0"
    assert error_of(request(ws, 1, "hello", capabilities=theirs))["code"] == "incompatible"


def test_a_wrong_token_gets_401_and_no_socket(peer):
    with pytest.raises(InvalidStatus) as e:
        peer.connect(token="wrong-token")
    assert e.value.response.status_code == 401


def test_unknown_op_is_bad_request_and_the_socket_stays_open(ws):
    error = error_of(request(ws, 7, "no_such_op"))
    assert error["code"] == "bad_request" and "no_such_op" in error["message"]
    assert request(ws, 8, "classes")["ok"] is True


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        json.dumps({"op": "classes"}),  # no id
        b"\x00\x00",  # a binary frame shorter than its header length
        struct.pack(">I", 100) + b"{}",  # a header longer than the frame
    ],
    ids=["not-json", "not-object", "no-id", "short-binary", "truncated-header"],
)
def test_malformed_frames_get_bad_request_with_re_null(ws, frame):
    ws.send(frame)
    reply = read(ws)
    assert reply["re"] is None and error_of(reply)["code"] == "bad_request"
    assert request(ws, "after", "classes")["ok"] is True


def test_json_over_8_mib_is_bad_request_saying_split_it(ws):
    ws.send(json.dumps({"id": 1, "op": "find_missing", "digests": [], "pad": "x" * (8 * 1024 * 1024)}))
    error = error_of(read(ws))
    assert error["code"] == "bad_request" and "split" in error["message"]


def test_a_frame_over_64_mib_closes_the_socket_1009(peer):
    with peer.connect() as conn:
        conn.send(struct.pack(">I", 2) + b"{}" + bytes(64 * 1024 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as e:
            conn.recv(timeout=30)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009


def test_find_missing_then_put_blobs_then_nothing_missing(ws):
    data = b"contract blob " + np.random.default_rng(1).bytes(64)
    digest, blobs = capture({"b": data})
    chunk = next(d for d in blobs if d != digest)
    assert request(ws, 1, "find_missing", digests=[chunk])["missing"] == [chunk]
    reply = put_blobs(ws, 2, {chunk: blobs[chunk]})
    assert [(r["digest"], r["code"]) for r in reply["results"]] == [(chunk, "ok")]
    assert request(ws, 3, "find_missing", digests=[chunk])["missing"] == []


def test_put_blobs_refuses_bytes_that_do_not_match_their_digest(ws):
    digest, blobs = capture({"c": b"one"})
    reply = put_blobs(ws, 1, {digest: blobs[digest][:-1] + b"!"})
    assert [r["code"] for r in reply["results"]] == ["digest_mismatch"]
    assert request(ws, 2, "find_missing", digests=[digest])["missing"] == [digest]


def test_run_of_an_unknown_class_lists_the_classes(ws):
    digest, blobs = capture({"x": 1})
    put_blobs(ws, 1, blobs)
    ws.send(json.dumps({"id": "r", "op": "run", "session": "s", "gpu_class": "tpu9", "code": "x",
                        "snapshot": digest, "timeout_s": 0}))
    error = error_of(reply_to(ws, "r"))
    assert error["code"] == "unknown_class" and "h100" in error["message"]


def test_run_names_every_missing_digest(ws):
    rng = np.random.default_rng(2)
    digest, blobs = capture({"a": rng.random(20_000), "b": rng.random(20_000)})
    chunks = {d for d, data in blobs.items() if d != digest}
    assert len(chunks) >= 2
    put_blobs(ws, 1, {digest: blobs[digest]})
    _, final = run(ws, "missing", "a.sum()", digest)
    error = error_of(final)
    assert error["code"] == "missing_blobs" and set(error["missing"]) == chunks


def test_run_streams_events_in_order_and_done_names_the_new_state(ws):
    digest, blobs = capture({"x": 41})
    put_blobs(ws, 1, blobs)
    events, final = run(ws, "ok", 'print("first")\nprint("second")\ny = x + 1\ny', digest, notebook="nb.ipynb", cell="c1")
    kinds = [e["event"] for e in events if e["event"] not in ("queued", "progress")]
    assert kinds == ["started", "stream", "stream", "result"], events
    started = events[[e["event"] for e in events].index("started")]
    assert started["gpu_class"] == "h100" and started["simulated"] is True
    assert "".join(e["text"] for e in events if e["event"] == "stream") == "first\nsecond\n"
    assert next(e for e in events if e["event"] == "result")["data"]["text/plain"] == "42"
    assert final["ok"] is True and final["event"] == "done" and final["status"] == "ok"
    json_format.ParseDict({k: v for k, v in final.items() if k in ("status", "snapshot", "timings")}, gateway_pb2.RunDone())
    # The new state is stored and fetchable: its manifest names y.
    got = request(ws, "get", "get_blobs", digests=[final["snapshot"]])
    (item,) = got["blobs"]
    manifest = Manifest.from_bytes(got["_payload"][item["offset"] : item["offset"] + item["length"]])
    assert any("y" in g.names for g in manifest.groups)


def test_a_raising_cell_is_an_error_event_and_done_with_status_error(ws):
    digest, blobs = capture({})
    put_blobs(ws, 1, blobs)
    events, final = run(ws, "err", 'raise ValueError("boom")', digest)
    (error,) = [e for e in events if e["event"] == "error"]
    assert (error["ename"], error["evalue"], error["etype"]) == ("ValueError", "boom", "builtins:ValueError")
    assert final["ok"] is True and final["status"] == "error"


def test_session_status_is_cold_then_warm_after_a_run(ws):
    assert request(ws, 1, "session_status", session="never-ran")["status"]["state"] == "cold"
    digest, blobs = capture({})
    put_blobs(ws, 2, blobs)
    _, final = run(ws, "warm", "pass", digest)
    assert final["ok"] is True
    reply = request(ws, 3, "session_status", session="s-warm")
    json_format.ParseDict({k: v for k, v in reply.items() if k in ("status", "warm_grace_s")},
                          gateway_pb2.SessionStatusReply())
    assert reply["status"]["state"] == "warm" and reply["status"]["gpu_class"] == "h100"
    assert reply["status"]["warm_s_left"] > 0 and reply["warm_grace_s"] > 0
    assert error_of(request(ws, 4, "session_status"))["code"] == "bad_request"


def test_usage_counts_the_runs_that_ended(ws):
    digest, blobs = capture({})
    put_blobs(ws, 1, blobs)
    before = request(ws, 2, "usage")["usage"]["total"]["runs"]
    _, final = run(ws, "counted", "pass", digest, notebook="n.ipynb", cell="c")
    assert final["ok"] is True
    reply = request(ws, 3, "usage")
    json_format.ParseDict({"usage": reply["usage"]}, gateway_pb2.UsageReply())
    assert reply["usage"]["total"]["runs"] == before + 1
    assert "h100" in [line["key"] for line in reply["usage"]["by"]["gpu_class"]]


def test_snapshot_list_and_an_unknown_snapshot(ws):
    listed = request(ws, 1, "snapshot_list")
    assert listed["ok"] is True and isinstance(listed["snapshots"], list) and isinstance(listed["refs"], dict)
    assert error_of(request(ws, 2, "snapshot_get", ref="f" * 64))["code"] == "forbidden"
