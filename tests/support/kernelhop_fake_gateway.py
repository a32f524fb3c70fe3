"""A fake gateway on loopback speaking the documented WebSocket protocol (ARCHITECTURE.md), for the kernel's tests:
the one fake of that protocol, held to the real gateway by tests/contract (the same cases against both).

It keeps blobs in a dict and hands each `run` to a `runner(gw, conn, msg)` the test chooses, from a thread of its
own, so `cancel` requests keep being read meanwhile. The default runner executes cells on the real worker
(runtime/python, one warm per session), as a runtime would; only the scheduling and the stores are faked.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import blake3
from google.protobuf import json_format
from kernelhop_proto import IncompatiblePeer, agree, offer, to_json
from kernelhop_proto.v1.capabilities_pb2 import Capabilities
from kernelhop_snapshot import Digest, DirectoryBlobStore, Manifest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

TOKEN = "test-token"
USER = "admin"
WARM_GRACE_S = 60


def digest_of_bytes(data: bytes) -> str:
    return f"{blake3.blake3(data).hexdigest()}/{len(data)}"


def send_json(conn: ServerConnection, msg: dict[str, Any]) -> None:
    try:
        conn.send(json.dumps(msg))
    except ConnectionClosed:
        pass  # the client went away mid-run (an interrupted test): nothing to tell it


def send_binary(conn: ServerConnection, header: dict[str, Any], payload: bytes) -> None:
    head = json.dumps(header).encode()
    conn.send(struct.pack(">I", len(head)) + head + payload)


# As the real gateway (gateway/src/wsApi.ts): a text frame or binary header holds at most this much JSON.
MAX_JSON_BYTES = 8 * 1024 * 1024


def _split_frame(raw: str | bytes) -> tuple[dict[str, Any], bytes]:
    """A frame's request and payload; ValueError (bad_request) for what the real gateway refuses too."""
    if isinstance(raw, bytes):
        if len(raw) < 4:
            raise ValueError("binary frame shorter than its 4-byte header length")
        (n,) = struct.unpack_from(">I", raw)
        if 4 + n > len(raw):
            raise ValueError(f"binary frame says its JSON header has {n} bytes but only {len(raw) - 4} follow")
        head, payload = raw[4 : 4 + n], raw[4 + n :]
    else:
        head, payload = raw.encode(), b""
    if len(head) > MAX_JSON_BYTES:
        raise ValueError(f"a frame has {len(head)} bytes of JSON; at most {MAX_JSON_BYTES}, split the request")
    try:
        msg = json.loads(head)
    except ValueError as e:
        raise ValueError(f"a frame is not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ValueError("a frame must be a JSON object")
    if not isinstance(msg.get("id"), (str, int, float)) or isinstance(msg.get("id"), bool):
        raise ValueError('every request needs "id": a string or a number, echoed back as "re"')
    return msg, payload


Runner = Callable[["FakeGateway", ServerConnection, dict[str, Any]], None]


class FakeGateway:
    def __init__(self, token: str | None = TOKEN):
        self.token = token
        self.blobs: dict[str, bytes] = {}
        # What get_blobs answers instead of the stored bytes: bytes (corrupt) or None (not_found).
        self.get_override: dict[str, bytes | None] = {}
        self.put_codes: dict[str, str] = {}
        # Every digest stored by put_blobs, in order.
        self.put_digests: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.classes: dict[str, Any] = {
            "h100": {"runtimes": 1, "capacity": 2, "busy": 0, "queued": 0, "simulated": True}
        }
        self.runner: Runner | None = worker_runner
        # Ops a test answers itself (the reply's fields but "re" and "ok"), and ops whose request the fake answers by
        # closing the connection, as a gateway that dies mid-request.
        self.answers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.close_on: set[str] = set()
        self.script: str | None = None
        self.cancelled = threading.Event()
        # The real worker kept warm per session, the runs each served, and the worker of each run going on.
        self.workers: dict[str, RealWorker] = {}
        self.runs_by_session: dict[str, int] = {}
        self.running: dict[str, RealWorker] = {}
        self.cancelled_runs: set[str] = set()
        # Sessions whose worker is warm, by class, and the runs that ended (for `usage`).
        self.warm: dict[str, str] = {}
        self.ended: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.connections = 0
        self._server = serve(
            self._handle, "127.0.0.1", 0, process_request=self._auth, max_size=64 * 1024 * 1024, compression=None
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}/ws/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)
        for worker in self.workers.values():
            worker.close()

    def ops(self) -> list[str]:
        return [r["op"] for r in self.requests]

    def _auth(self, conn: ServerConnection, request):
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return conn.respond(401, "bad token\n")
        return None

    def _handle(self, conn: ServerConnection) -> None:
        self.connections += 1
        try:
            for raw in conn:
                try:
                    msg, payload = _split_frame(raw)
                except ValueError as e:
                    # As the real gateway: a frame too broken to carry an id is answered with re null.
                    send_json(conn, error_reply(None, "bad_request", str(e)))
                    continue
                self.requests.append(msg)
                self._dispatch(conn, msg, payload)
        except ConnectionClosed:
            pass

    def _dispatch(self, conn: ServerConnection, msg: dict[str, Any], payload: bytes) -> None:
        rid, op = msg.get("id"), msg.get("op")
        if op in self.close_on:
            conn.close()
        elif op in self.answers:
            send_json(conn, {"re": rid, "ok": True, **self.answers[op](msg)})
        elif op == "hello":
            # As the real gateway: it answers the socket's hello with the agreement, or refuses another protocol.
            try:
                theirs = json_format.ParseDict(msg.get("capabilities") or {}, Capabilities(), ignore_unknown_fields=True)
                agreed = agree(offer(["zstd"]), theirs, "this client")
            except (json_format.ParseError, IncompatiblePeer) as e:
                send_json(conn, error_reply(rid, "incompatible", str(e)))
                return
            send_json(conn, {"re": rid, "ok": True, "capabilities": to_json(agreed)})
        elif op == "find_missing":
            send_json(conn, {"re": rid, "ok": True, "missing": [d for d in msg["digests"] if d not in self.blobs]})
        elif op == "put_blobs":
            results = []
            for b in msg["blobs"]:
                data = payload[int(b["offset"]) : int(b["offset"] + b["length"])]  # JSON numbers: 6 and 6.0 alike
                code = self.put_codes.get(b["digest"]) or (
                    "ok" if digest_of_bytes(data) == b["digest"] else "digest_mismatch"
                )
                if code == "ok":
                    self.blobs[b["digest"]] = data
                    self.put_digests.append(b["digest"])
                results.append({"digest": b["digest"], "code": code, "message": "" if code == "ok" else code})
            send_json(conn, {"re": rid, "ok": True, "results": results})
        elif op == "get_blobs":
            entries, parts, offset = [], [], 0
            for d in msg["digests"]:
                data = self.get_override[d] if d in self.get_override else self.blobs.get(d)
                if data is None:
                    entries.append({"digest": d, "code": "not_found"})
                    continue
                entries.append({"digest": d, "offset": offset, "length": len(data)})
                parts.append(data)
                offset += len(data)
            send_binary(conn, {"re": rid, "ok": True, "blobs": entries}, b"".join(parts))
        elif op == "classes":
            send_json(conn, {"re": rid, "ok": True, "classes": self.classes})
        elif op == "run":
            if msg["gpu_class"] not in self.classes:
                send_json(
                    conn,
                    error_reply(
                        rid,
                        "unknown_class",
                        f"no runtime serves class {msg['gpu_class']!r}; "
                        f"available now: {', '.join(sorted(self.classes))}",
                    ),
                )
                return
            # As the real gateway: the manifest and every chunk it names must be stored.
            missing = [d for d in [msg["snapshot"]] if d not in self.blobs]
            if not missing:
                missing = self._missing_chunks(self.blobs[msg["snapshot"]])
            if missing:
                reply = error_reply(rid, "missing_blobs", f"snapshot names {missing[0]}, not in the store")
                reply["error"]["missing"] = missing  # as the real gateway: every digest it lacks
                send_json(conn, reply)
                return
            assert self.runner is not None, "the test set no runner"
            threading.Thread(target=self.runner, args=(self, conn, msg), daemon=True).start()
        elif op == "session_status":
            session = msg.get("session")
            if not isinstance(session, str) or not session:
                send_json(conn, error_reply(rid, "bad_request", "session_status needs \"session\": the kernel's session"))
                return
            gpu_class = self.warm.get(session)
            status = {"state": "cold"} if gpu_class is None else {
                "state": "warm", "runtime": "fake-rt", "gpu_class": gpu_class, "warm_s_left": WARM_GRACE_S
            }
            send_json(conn, {"re": rid, "ok": True, "status": status, "warm_grace_s": WARM_GRACE_S})
        elif op == "usage":
            send_json(conn, {"re": rid, "ok": True, "usage": self._usage(msg)})
        elif op == "snapshot_list":
            # This fake saves no snapshots (the real gateway's are tested against it, tests/snapshots).
            send_json(conn, {"re": rid, "ok": True, "snapshots": [], "shared": [], "refs": {}})
        elif op == "snapshot_get":
            send_json(conn, error_reply(rid, "forbidden", f"snapshot {msg.get('ref') or msg.get('link')!r}: not found or not yours"))
        elif op == "cancel":
            self.cancelled.set()
            self.cancelled_runs.add(str(msg.get("run")))
            worker = self.running.get(str(msg.get("run")))
            if worker is not None:
                worker.interrupt()
            send_json(conn, {"re": rid, "ok": True})
        else:
            send_json(conn, error_reply(rid, "bad_request", f"unknown op {op!r}"))


    def _usage(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The `usage` report of the runs this fake served (gateway/src/usage.ts's shape), all of its one user."""
        since = msg.get("since")
        ended = [r for r in self.ended if since is None or r["ended_ms"] >= since]
        by: dict[str, list[dict[str, Any]]] = {}
        for group in ("user", "notebook", "cell", "gpu_class", "runtime"):
            lines: dict[str, dict[str, Any]] = {}
            for r in ended:
                line = lines.setdefault(r[group], {"key": r[group], "runs": 0, "gpuSeconds": 0.0})
                line["runs"] += 1
                line["gpuSeconds"] += r["gpu_s"]
            by[group] = list(lines.values())
        total = {"runs": len(ended), "gpuSeconds": sum(r["gpu_s"] for r in ended)}
        return {"since": since, "total": total, "by": by}

    def _missing_chunks(self, manifest: bytes) -> list[str]:
        """As the real gateway: a run needs every chunk its manifest names, not only the manifest. (Tests of the
        client alone send blobs that are no manifest: those run as they are.)"""
        try:
            chunks = Manifest.from_bytes(manifest).blob_digests()
        except ValueError:
            return []
        return [str(d) for d in chunks if str(d) not in self.blobs]


class RealWorker:
    """The real worker (runtime/python, `python -m kernelhop_worker`) behind the fake, as a runtime keeps one warm
    for a session: the hello, then `run` commands on stdin and events on fd 3 (ARCHITECTURE.md, "Runtime ↔ worker").
    Blobs are handed over as the runtime does: written into its given directory; what it captures is read from its
    out directory and verified before the fake stores it."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kernelhop-fake-worker-")
        self.given = DirectoryBlobStore(os.path.join(self._dir.name, "given"), durable=False)
        self.out = os.path.join(self._dir.name, "out")
        os.makedirs(self.out)
        read, write = os.pipe()
        # A file, not a pipe nobody drains: a worker writing much to fd 2 must not block.
        self._stderr = open(os.path.join(self._dir.name, "stderr"), "wb")
        env = {**os.environ, "KERNELHOP_PRELOAD": os.environ.get("KERNELHOP_PRELOAD", "numpy")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kernelhop_worker", "--given", self.given.root, "--out", self.out],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            # The worker writes its events on fd 3.
            preexec_fn=lambda: os.dup2(write, 3),
            pass_fds=(3,),
            env=env,
            cwd=self._dir.name,
        )
        os.close(write)
        self.events = os.fdopen(read, "rb")
        self.lock = threading.Lock()
        ready = self.next_event()
        assert ready.get("event") == "ready", ready
        self.send({"op": "hello", **to_json(offer([]))})
        hello = self.next_event()
        assert hello.get("event") == "hello", hello

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def next_event(self) -> dict[str, Any]:
        line = self.events.readline()
        if not line:
            with open(os.path.join(self._dir.name, "stderr"), "rb") as f:
                stderr = f.read().decode(errors="replace")
            raise RuntimeError(f"the worker exited ({self.proc.wait()}): {stderr[-2000:]}")
        return json.loads(line)

    def hand_over(self, blobs: dict[str, bytes]) -> None:
        for d, data in list(blobs.items()):
            digest = Digest.parse(d)
            if not self.given.has(digest):
                self.given.put(digest, data)

    def take(self, digests: list[str]) -> dict[str, bytes]:
        taken = {}
        for d in digests:
            data = open(os.path.join(self.out, Digest.parse(d).hash), "rb").read()
            assert digest_of_bytes(data) == d, f"the worker wrote {d} with other bytes"
            taken[d] = data
        return taken

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.events.close()
        self._stderr.close()
        self._dir.cleanup()


def worker_runner(gw: FakeGateway, conn: ServerConnection, msg: dict[str, Any]) -> None:
    """Run the cell as a runtime would, on the session's warm real worker: hand the blobs over, relay its events,
    take what it captured, answer `done` (or the worker's failure).

    `gw.script` injects what a real worker does not do on demand: "lost" fails the run with runtime_lost after some
    output. A `cancel` interrupts the worker (SIGINT), as the runtime does."""
    rid = msg["id"]
    session = msg.get("session") or ""
    with gw.lock:
        worker = gw.workers.get(session)
        if worker is None:
            worker = gw.workers[session] = RealWorker()
    warm = worker.proc.poll() is None and gw.runs_by_session.get(session, 0) > 0
    gw.runs_by_session[session] = gw.runs_by_session.get(session, 0) + 1
    send_json(
        conn,
        {
            "re": rid,
            "event": "started",
            "runtime": "fake-rt",
            "worker": f"w-{worker.proc.pid}",
            "warm": warm,
            "gpu_class": msg["gpu_class"],
            "simulated": True,
        },
    )
    if gw.script == "lost":
        send_json(conn, {"re": rid, "event": "stream", "name": "stdout", "text": "partial output\n"})
        send_json(conn, error_reply(rid, "runtime_lost", "the runtime fake-rt stopped answering"))
        return
    started = time.monotonic()
    with worker.lock:
        gw.running[str(rid)] = worker
        try:
            if str(rid) in gw.cancelled_runs:
                send_json(conn, error_reply(rid, "cancelled", "the run was cancelled"))
                return
            worker.hand_over(gw.blobs)
            worker.send(
                {"op": "run", "run_id": str(rid), "code": msg["code"], "snapshot": msg["snapshot"],
                 "reach": msg.get("reach")}
            )
            while True:
                event = worker.next_event()
                kind = event.pop("event")
                event.pop("run_id", None)
                if kind in ("stream", "display", "result", "error"):
                    send_json(conn, {"re": rid, "event": kind, **event})
                elif kind == "done":
                    # As the runtime: only what the store lacks is taken (a manifest equal to one sent is not in out/).
                    gw.blobs.update(worker.take([d for d in [*event["new_blobs"], event["snapshot"]] if d not in gw.blobs]))
                    cancelled = str(rid) in gw.cancelled_runs and event["status"] == "error"
                    gw.warm[session] = msg["gpu_class"]
                    gw.ended.append(
                        {"user": USER, "notebook": f"{USER}\t{msg.get('notebook') or ''}",
                         "cell": f"{USER}\t{msg.get('notebook') or ''}\t{msg.get('cell') or ''}",
                         "gpu_class": msg["gpu_class"], "runtime": "fake-rt",
                         "gpu_s": time.monotonic() - started, "ended_ms": time.time() * 1000}
                    )
                    if cancelled:
                        send_json(conn, error_reply(rid, "cancelled", "the run was cancelled"))
                    else:
                        send_json(
                            conn,
                            {"re": rid, "ok": True, "event": "done", "status": event["status"],
                             "snapshot": event["snapshot"], "timings": event.get("timings", {})},
                        )
                    return
                elif kind == "failed":
                    send_json(conn, error_reply(rid, event.get("code", "internal"), event.get("message", "")))
                    return
        except RuntimeError as e:
            gw.workers.pop(session, None)
            send_json(conn, error_reply(rid, "worker_died", str(e)))
        finally:
            gw.running.pop(str(rid), None)


def error_reply(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {"re": rid, "ok": False, "error": {"code": code, "message": message}}


def main(argv: list[str] | None = None) -> None:
    """The fake as a process, for tests in other languages (ui-tests): prints its URL as the first line on stdout
    and serves until stdin closes."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--token", default=TOKEN, help="the token it asks for; '' for none (as behind a relay)")
    parser.add_argument("--capacity", type=int, default=2, help="slots of its one class, h100")
    args = parser.parse_args(argv)
    gw = FakeGateway(args.token or None)
    gw.classes["h100"]["capacity"] = args.capacity
    print(gw.url, flush=True)
    try:
        sys.stdin.read()
    finally:
        gw.close()


if __name__ == "__main__":
    main()
