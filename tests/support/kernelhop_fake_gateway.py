"""A fake gateway on loopback speaking the documented WebSocket protocol (ARCHITECTURE.md), for the kernel's tests.

It keeps blobs in a dict and hands each `run` to a `runner(gw, conn, msg)` the test chooses; runners send events and
the final reply themselves, from a thread of their own, so `cancel` requests keep being read meanwhile.
"""

from __future__ import annotations

import ast
import builtins
import json
import struct
import threading
import traceback
from collections.abc import Callable
from typing import Any

import blake3
from kernelhop_proto import offer, to_json
from kernelhop_snapshot import Capturer, Digest, Manifest, MemoryBlobStore
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

TOKEN = "test-token"


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
        self.script: str | None = None
        self.cancelled = threading.Event()
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
                if isinstance(raw, bytes):
                    (n,) = struct.unpack_from(">I", raw)
                    msg, payload = json.loads(raw[4 : 4 + n]), raw[4 + n :]
                else:
                    msg, payload = json.loads(raw), b""
                self.requests.append(msg)
                self._dispatch(conn, msg, payload)
        except ConnectionClosed:
            pass

    def _dispatch(self, conn: ServerConnection, msg: dict[str, Any], payload: bytes) -> None:
        rid, op = msg.get("id"), msg.get("op")
        if op == "hello":
            # As the real gateway: it answers the socket's hello with its capabilities.
            send_json(conn, {"re": rid, "ok": True, "capabilities": to_json(offer(["zstd"]))})
        elif op == "find_missing":
            send_json(conn, {"re": rid, "ok": True, "missing": [d for d in msg["digests"] if d not in self.blobs]})
        elif op == "put_blobs":
            results = []
            for b in msg["blobs"]:
                data = payload[b["offset"] : b["offset"] + b["length"]]
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
            send_json(conn, {"re": rid, "ok": True, "status": {"state": "cold"}, "warm_grace_s": 60})
        elif op == "cancel":
            self.cancelled.set()
            send_json(conn, {"re": rid, "ok": True})
        else:
            send_json(conn, error_reply(rid, "bad_request", f"unknown op {op!r}"))


    def _missing_chunks(self, manifest: bytes) -> list[str]:
        """As the real gateway: a run needs every chunk its manifest names, not only the manifest. (Tests of the
        client alone send blobs that are no manifest: those run as they are.)"""
        try:
            chunks = Manifest.from_bytes(manifest).blob_digests()
        except ValueError:
            return []
        return [str(d) for d in chunks if str(d) not in self.blobs]


class _EventStream:
    """A file that turns writes into `stream` events, as the worker relays a cell's output."""

    def __init__(self, conn: ServerConnection, rid: str, name: str):
        self.conn, self.rid, self.name = conn, rid, name

    def write(self, text: str) -> int:
        if text:
            send_json(self.conn, {"re": self.rid, "event": "stream", "name": self.name, "text": text})
        return len(text)

    def flush(self) -> None:
        pass


def worker_runner(gw: FakeGateway, conn: ServerConnection, msg: dict[str, Any]) -> None:
    """Run the cell as a runtime would: restore the snapshot, run with output relayed, capture, answer `done`.

    `gw.script` shapes the run: "lost" fails it with runtime_lost after some output, "hang" waits for `cancel`.
    """
    rid = msg["id"]
    store = MemoryBlobStore()
    for d, data in gw.blobs.items():
        store.put(Digest.parse(d), data)
    cap = Capturer(store)
    manifest = Manifest.from_bytes(store.get(Digest.parse(msg["snapshot"])))
    ns: dict[str, Any] = {"__name__": "__main__"}
    ns.update(cap.restore(manifest, globals=ns))
    send_json(
        conn,
        {
            "re": rid,
            "event": "started",
            "runtime": "fake-rt",
            "worker": "w1",
            "warm": False,
            "gpu_class": msg["gpu_class"],
            "simulated": True,
        },
    )
    if gw.script == "lost":
        send_json(conn, {"re": rid, "event": "stream", "name": "stdout", "text": "partial output\n"})
        send_json(conn, error_reply(rid, "runtime_lost", "the runtime fake-rt stopped answering"))
        return
    if gw.script == "hang":
        gw.cancelled.wait(10)
        send_json(conn, error_reply(rid, "cancelled", "the run was cancelled"))
        return
    status = "ok"
    tree = ast.parse(msg["code"])
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    # Not contextlib.redirect_stdout: sys.stdout is process-wide, and the kernel under test shares this process.
    out = _EventStream(conn, rid, "stdout")
    ns["__builtins__"] = {**vars(builtins), "print": lambda *a, **kw: print(*a, **{"file": out, **kw})}
    try:
        exec(compile(tree, "<cell>", "exec"), ns)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), ns)
            if value is not None:
                send_json(conn, {"re": rid, "event": "result", "data": {"text/plain": repr(value)}, "metadata": {}})
    except Exception as e:
        status = "error"
        send_json(
            conn,
            {
                "re": rid,
                "event": "error",
                "ename": type(e).__name__,
                "evalue": str(e),
                "traceback": ["REMOTE TRACEBACK", *traceback.format_exception(e)],
            },
        )
    # Keep __name__ in ns itself: it is how the engine knows the cell's functions as notebook functions.
    new = cap.capture({k: v for k, v in ns.items() if k not in ("__builtins__", "__name__")})
    for d in store.digests():
        gw.blobs[str(d)] = store.get(d)
    send_json(
        conn, {"re": rid, "ok": True, "event": "done", "status": status, "snapshot": str(new.digest), "timings": {}}
    )


def error_reply(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {"re": rid, "ok": False, "error": {"code": code, "message": message}}
