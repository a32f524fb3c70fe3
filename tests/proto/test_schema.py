"""The schema is the contract: a message changed on one side only fails here.

- The committed Python modules (kernelhop_proto.v1) are what proto/ generates now (TypeScript is generated at
  every build, so it cannot drift; its compile against the generated types is the TypeScript half).
- What the Python sides write parses against the schema: the worker's event lines and the hop display.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest
from google.protobuf import json_format

import kernelhop_proto
from kernelhop_proto.v1 import gateway_pb2, hop_display_pb2, worker_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_proto_python  # noqa: E402


def test_generated_python_matches_proto(tmp_path: pathlib.Path) -> None:
    fresh = {p.name: p.read_text() for p in gen_proto_python.generate(tmp_path)}
    committed = {p.name: p.read_text() for p in gen_proto_python.OUT.glob("*_pb2.py")}
    assert sorted(fresh) == sorted(committed), "run: .venv/bin/python scripts/gen_proto_python.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} differ from proto/: run .venv/bin/python scripts/gen_proto_python.py"


def test_defaults_come_from_the_schema_on_both_sides() -> None:
    from kernelhop.client import gateway as gateway_client

    assert gateway_client.MAX_FRAME == kernelhop_proto.DEFAULT_LIMITS["max_frame_bytes"]
    assert gateway_client.PUT_FRAME_BYTES == kernelhop_proto.DEFAULT_LIMITS["max_batch_bytes"]
    assert gateway_client.PUT_DEPTH == kernelhop_proto.DEFAULT_LIMITS["max_blobs_in_flight"]
    source = (ROOT / "gateway" / "src" / "wsApi.ts").read_text()
    assert "DEFAULT_LIMITS.maxFrameBytes" in source and "DEFAULT_LIMITS.maxBatchReadBytes" in source


def test_worker_event_lines_parse_against_the_schema() -> None:
    """The worker's channel writes to a pipe; each line must be a WorkerEvent of the schema, fields and types."""
    from kernelhop_worker.channel import EventChannel

    read_fd, write_fd = os.pipe()
    channel = EventChannel(write_fd)
    channel.emit("ready", pid=os.getpid(), python="3.11.7")
    channel.run_id = "r1"
    channel.emit("restored")
    channel.stream("stdout", "hi\n")
    channel.emit("display", data={"text/plain": "<Figure>"}, metadata={})
    channel.emit("error", ename="ValueError", evalue="no", traceback=["tb"], etype="builtins:ValueError")
    channel.emit("failed", code="restore_failed", message="x", corrupt_blob=None)
    channel.emit(
        "done", status="ok", snapshot="a" * 64 + "/1", new_blobs=[], timings={"restore_s": 0.1, "run_s": 0.2}
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        lines = [json.loads(line) for line in pipe.read().splitlines()]
    kinds = []
    for line in lines:
        line = {k: v for k, v in line.items() if v is not None}  # JSON null: the field is unset
        event = kernelhop_proto.decode_tagged(worker_pb2.WorkerEvent, "event", line)
        kinds.append(event.WhichOneof("kind"))
    assert kinds == ["ready", "restored", "stream", "display", "error", "failed", "done"]


def test_a_renamed_field_fails_to_parse() -> None:
    with pytest.raises(ValueError, match="dataa"):
        kernelhop_proto.decode_tagged(worker_pb2.WorkerEvent, "event", {"event": "display", "dataa": {}})
    with pytest.raises(ValueError, match="unknown event 'streem'"):
        kernelhop_proto.decode_tagged(gateway_pb2.RunEvent, "event", {"event": "streem", "text": ""})


def test_run_events_round_trip_as_the_wire_has_them() -> None:
    wire = {"event": "progress", "phase": "upload", "done_bytes": 5, "total_bytes": 10}
    event = kernelhop_proto.decode_tagged(gateway_pb2.RunEvent, "event", wire)
    assert kernelhop_proto.encode_tagged(event, "event") == wire


def test_hop_display_payload_parses_against_the_schema() -> None:
    from kernelhop.magics.hop_display import MIME_TYPE, HopDisplay

    display = HopDisplay("h100", enabled=False)
    display.finished({"total_s": 1.0, "capture_s": 0.1, "remote_s": 0.5}, "ok")
    payload = display._bundle()[MIME_TYPE]
    json_format.ParseDict(payload, hop_display_pb2.HopDisplay())


def test_protocol_reference_is_current() -> None:
    import gen_protocol_doc

    assert gen_protocol_doc.DOC.read_text() == gen_protocol_doc.render(), (
        "docs/PROTOCOL.md is stale: run .venv/bin/python scripts/gen_protocol_doc.py"
    )


def test_a_request_is_held_to_its_message_before_it_is_sent():
    from kernelhop_proto import encode_request

    assert encode_request("snapshot_share", {"ref": "abc", "with": "bob", "expires_s": None}) == {
        "ref": "abc",
        "with": "bob",
    }
    with pytest.raises(ValueError, match="no field named \"reff\""):
        encode_request("snapshot_get", {"reff": "abc"})
    with pytest.raises(ValueError, match="timeout_s"):
        encode_request("run", {"session": "s", "timeout_s": "soon"})
    with pytest.raises(ValueError, match="not declared in proto/kernelhop/v1/gateway.proto"):
        encode_request("no_such_op", {})
