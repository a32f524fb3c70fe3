"""A synchronous client of the gateway's WebSocket API (ARCHITECTURE.md, "Kernel and browser ↔ gateway").

Synchronous on purpose: the magic runs on the kernel's main thread, and waiting there in short `recv` slices is what
lets the kernel's SIGINT reach us as `KeyboardInterrupt` while a remote cell runs.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import struct
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from kernelhop_snapshot import Digest, digest_of
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State
from google.protobuf import json_format
from kernelhop_proto import DEFAULT_LIMITS, PROTOCOL, encode_request, offer
from kernelhop_proto.v1.capabilities_pb2 import Capabilities
from kernelhop_proto.v1.gateway_pb2 import HelloRequest
from websockets.sync.client import ClientConnection, connect

from .compression import CODEC, compress_if_it_pays, compression_wanted
from .uploads import HttpUploads, UploadCut, UploadRefused, UploadsUnavailable, upload_url
from ..tls import PinMismatch, TlsSettingError, client_context

MiB = 1024 * 1024
# The limits are the schema's defaults (proto/kernelhop/v1/capabilities.proto), the one place they are written.
# The gateway's maxPayload; our own receive limit matches it.
MAX_FRAME = int(DEFAULT_LIMITS["max_frame_bytes"])
# Blob payload per put_blobs/get_blobs frame at most, leaving room under MAX_FRAME for the JSON header.
BATCH_BYTES = int(DEFAULT_LIMITS["max_batch_read_bytes"])
# put_blobs frames: their size and how many may await their reply at once (see put_blobs).
PUT_FRAME_BYTES = int(DEFAULT_LIMITS["max_batch_bytes"])
PUT_DEPTH = int(DEFAULT_LIMITS["max_blobs_in_flight"])
# get_blobs requests likewise (a request may ask for up to BATCH_BYTES).
GET_BATCH_BYTES = PUT_FRAME_BYTES
GET_DEPTH = PUT_DEPTH
# Digests per find_missing request: ~75 bytes each keeps a request near 750 KiB.
FIND_BATCH = 10_000  # the gateway's limit per request (MAX_DIGESTS in gateway/src/wsApi.ts)
# How long one recv waits before giving Python a chance to deliver a signal.
POLL_S = 0.25


class KernelhopError(Exception):
    """Base of the errors a hop raises: each message says what happened and what to do."""

    def _render_traceback_(self) -> list[str]:
        # An expected failure (a refusal, a gateway down, a class nobody offers), not a bug in the user's code: the
        # message is all the user needs, and kernelhop's own frames would only bury it.
        return [f"{type(self).__name__}: {self}"]


class GatewayUnreachable(KernelhopError):
    pass


class GatewayAuthError(KernelhopError):
    pass


class GatewayError(KernelhopError):
    """A request failed at the gateway (or a reply could not be used); `code` is the protocol's error code."""

    def __init__(self, code: str, message: str, missing: tuple[str, ...] = ()):
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message
        # missing_blobs: the digests the gateway lacks, so the caller sends just those and retries.
        self.missing = missing


def blob_digest(data: bytes | bytearray | memoryview) -> str:
    """The protocol's text form of a blob's digest, "<64 hex>/<size>"."""
    return str(digest_of(data))


def digest_size(digest: str) -> int:
    try:
        return Digest.parse(digest).size
    except ValueError as e:
        raise GatewayError("bad_request", str(e)) from None


def binary_head(header: Mapping[str, Any]) -> bytes:
    """A binary frame's start: its JSON header's length (u32 BE) and the header."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(head)) + head


def encode_binary(header: Mapping[str, Any], payload: Iterable[bytes | memoryview]) -> bytes:
    return b"".join([binary_head(header), *payload])


def decode_binary(frame: bytes) -> tuple[dict[str, Any], memoryview]:
    if len(frame) < 4:
        raise GatewayError("bad_reply", "the gateway sent a binary frame shorter than its 4-byte header length")
    (n,) = struct.unpack_from(">I", frame)
    if 4 + n > len(frame):
        raise GatewayError("bad_reply", f"the gateway sent a binary frame whose header length {n} overruns the frame")
    header = _parse_json(bytes(frame[4 : 4 + n]))
    return header, memoryview(frame)[4 + n :]


def _parse_json(raw: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GatewayError("bad_reply", f"the gateway sent a frame that is not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise GatewayError("bad_reply", "the gateway sent a JSON frame that is not an object")
    return msg


def _batches(items: Iterable[tuple[str, int]], limit: int) -> Iterator[list[str]]:
    """Group (digest, size) pairs so each group's sizes add up to at most `limit` (one item may exceed it alone)."""
    batch: list[str] = []
    total = 0
    for digest, size in items:
        if batch and total + size > limit:
            yield batch
            batch, total = [], 0
        batch.append(digest)
        total += size
    if batch:
        yield batch


STALL_S = 30.0


class GatewayConnection:
    """One connection to one gateway, opened on first use and again after it drops.

    `known` holds digests the gateway is known to have (it told us, or we put them), so later hops ask less.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        source: str = "",
        open_timeout: float = 10.0,
        reply_timeout: float = 300.0,
        ca: str | None = None,
        fingerprint: str | None = None,
    ):
        self.url = url
        self.token = token
        self.source = source
        self.open_timeout = open_timeout
        self.reply_timeout = reply_timeout
        self.ca = ca
        self.fingerprint = fingerprint
        # zstd on the uplink where it pays (compression.py); tests and benchmarks may set it either way.
        self.compress = compression_wanted(url)
        self.known: set[str] = set()
        # What the socket's hello agreed with the gateway (batch bytes, batches in flight); the offer until then.
        self.agreed = offer([CODEC])
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        # The upload endpoint (put_blobs), once the hello named one; off, until the next hello, once it failed us.
        self._http: HttpUploads | None = None
        self._uploads_off = False

    # -- connection -------------------------------------------------------------------------------------------

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        if self._http is not None:
            self._http.close()

    def _conn(self) -> ClientConnection:
        if self._ws is not None and self._ws.state is State.OPEN:
            return self._ws
        self.close()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        where = f" ({self.source})" if self.source else ""
        try:
            tls = client_context(self.ca, self.fingerprint) if self.url.startswith("wss://") else None
        except TlsSettingError as e:
            raise GatewayUnreachable(f"{e}{where}") from None
        try:
            self._ws = connect(
                self.url,
                ssl=tls,
                additional_headers=headers,
                max_size=MAX_FRAME,
                open_timeout=self.open_timeout,
                # Frames carry MiBs of chunks: don't compress what is mostly pickles and arrays.
                compression=None,
                # The connection outlives any one `with` block: it is kept between hops and closed in close().
                legacy=True,
            )
        except InvalidStatus as e:
            status = e.response.status_code
            if status == 401:
                if self.token:
                    raise GatewayAuthError(
                        f"the gateway at {self.url} refused the token (HTTP 401){where}. "
                        "Set KERNELHOP_TOKEN to the token `kernelhop gateway` printed when it started."
                    ) from None
                raise GatewayAuthError(
                    f"the gateway at {self.url} needs a token and none is set (HTTP 401){where}. "
                    "Set KERNELHOP_TOKEN to the token `kernelhop gateway` printed when it started."
                ) from None
            raise GatewayUnreachable(
                f"the server at {self.url} answered HTTP {status} instead of opening a WebSocket{where}: "
                "is it a kernelhop gateway? Its API lives at ws://HOST:PORT/ws/v1; fix KERNELHOP_GATEWAY."
            ) from None
        except InvalidURI as e:
            raise GatewayUnreachable(
                f"{self.url} is not a WebSocket URL ({e}){where}; fix KERNELHOP_GATEWAY."
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as e:
            raise GatewayUnreachable(
                f"cannot reach the kernelhop gateway at {self.url}: {_why(e, self.open_timeout)}{where}. "
                "Start one with `kernelhop up` (gateway, runtime and JupyterLab) or `kernelhop gateway`, "
                "or set KERNELHOP_GATEWAY."
            ) from None
        # A link that dies mid-send (a cut cable, a laptop's Wi-Fi gone) would leave a send blocked for TCP's ~15
        # minutes of retries; with this the kernel gives up once the gateway acknowledged nothing for STALL_S.
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux; elsewhere the keepalive pings are the only watch
            self._ws.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(STALL_S * 1000))
        self._hello(self._ws)
        # A new hello: the upload endpoint gets another try (what failed may have been the gateway restarting).
        self._uploads_off = False
        return self._ws

    def _hello(self, ws: ClientConnection) -> None:
        """The socket's first exchange: our capabilities against the gateway's; an older gateway is named as such."""
        ws.send(json.dumps({"id": "hello", "op": "hello", **encode_request("hello", HelloRequest(capabilities=offer([CODEC])))}))
        try:
            msg = _parse_json(ws.recv(timeout=self.open_timeout))
        except (TimeoutError, ConnectionClosed) as e:
            self.close()
            raise GatewayUnreachable(
                f"the gateway at {self.url} did not answer the hello ({e or 'no reply'}): is it a kernelhop gateway?"
            ) from None
        if msg.get("ok") is not True:
            self.close()
            err = msg.get("error") if isinstance(msg.get("error"), dict) else {}
            raise GatewayUnreachable(
                f"the gateway at {self.url} does not speak this kernelhop's protocol ({PROTOCOL}): "
                f"{err.get('message') or err.get('code') or msg}. Upgrade the gateway (or this package) so both match."
            )
        self.agreed = json_format.ParseDict(msg.get("capabilities") or {}, Capabilities(), ignore_unknown_fields=True)

    def _limit(self, ours: int, name: str) -> int:
        """The smaller of this side's limit and the agreed one (0: the gateway left it to the default)."""
        return min(ours, int(getattr(self.agreed, name) or ours))

    def _send(self, message: dict[str, Any] | bytes, *, retry: bool = True) -> None:
        """Send one frame. `retry=False` when requests are in flight on this connection: their replies would never
        come on a new one, so a closed socket is reported instead of reopened."""
        data = message if isinstance(message, bytes) else json.dumps(message, separators=(",", ":"))
        if not retry and (self._ws is None or self._ws.state is not State.OPEN):
            self.close()
            raise GatewayError(
                "connection_lost",
                f"the connection to the gateway at {self.url} closed mid-transfer; the local namespace is unchanged. "
                "Run the cell again once the gateway is back.",
            )
        try:
            self._conn().send(data)
        except ConnectionClosed as e:
            if not retry:
                self.close()
                raise self._lost(e) from None
            # The socket died while idle (gateway restarted): the request never left, so one fresh try is safe.
            self.close()
            try:
                self._conn().send(data)
            except ConnectionClosed as e:
                self.close()
                raise self._lost(e) from None

    def _lost(self, e: ConnectionClosed) -> GatewayError:
        reason = f" ({e.rcvd.reason or e.rcvd.code})" if e.rcvd else ""
        return GatewayError(
            "connection_lost",
            f"the connection to the gateway at {self.url} closed{reason}; the local namespace is unchanged. "
            "Run the cell again once the gateway is back.",
        )

    def _recv(self, timeout: float) -> tuple[dict[str, Any], memoryview | None] | None:
        """The next frame as (JSON message or binary header, binary payload), or None when `timeout` passes."""
        ws = self._ws
        if ws is None:
            raise GatewayError("connection_lost", f"the connection to the gateway at {self.url} was closed mid-request")
        try:
            # Never reconnect here: a reply can only come on the connection that carried its request.
            raw = ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as e:
            self.close()
            raise self._lost(e) from None
        if isinstance(raw, bytes):
            return decode_binary(raw)
        return _parse_json(raw), None

    def _next_id(self) -> str:
        return f"k{next(self._ids)}"

    def _await(self, rids: Collection[str], timeout: float) -> tuple[dict[str, Any], memoryview | None]:
        """Wait for the final reply to one of the requests `rids` (a frame-level error, `re: null`, counts too),
        dropping replies to requests given up on earlier; raise if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise GatewayError(
                    "timeout", f"the gateway at {self.url} did not answer within {timeout:.0f} s; try again"
                )
            got = self._recv(min(POLL_S, left))
            if got is None:
                continue
            msg, payload = got
            # A frame the gateway could not parse is answered without `re`; only ours are in flight.
            if msg.get("re") in rids or (msg.get("re") is None and msg.get("ok") is False):
                _raise_if_failed(msg)
                return msg, payload

    def _call(self, rid: str, data: dict[str, Any] | bytes) -> tuple[dict[str, Any], memoryview | None]:
        """Send one request (JSON, or an encoded binary frame) and return its final reply."""
        try:
            self._send(data)
            return self._await((rid,), self.reply_timeout)
        except KernelhopError:
            raise
        except BaseException:
            # Interrupted mid-request: the socket may hold half a frame or a late reply; start clean next time.
            self.close()
            raise

    def _op(self, op: str, **fields: Any) -> tuple[dict[str, Any], memoryview | None]:
        rid = self._next_id()
        # Every request is the schema's message (gateway.proto), held to it before it leaves.
        return self._call(rid, {"id": rid, "op": op, **encode_request(op, fields)})

    # -- operations -------------------------------------------------------------------------------------------

    def usage(self, *, user: str | None = None, since: int | None = None) -> dict[str, Any]:
        """GPU-seconds per user, notebook, cell, class and runtime (the gateway's report); `since` in ms since the
        epoch. A user's report is its own; only the admin may name another user."""
        fields = {k: v for k, v in (("user", user), ("since", since)) if v is not None}
        reply, _ = self._op("usage", **fields)
        return reply["usage"]

    def find_missing(self, digests: Iterable[str]) -> list[str]:
        """The digests the gateway lacks, asking only about those not known to be there."""
        ask = [d for d in dict.fromkeys(digests) if d not in self.known]
        missing: list[str] = []
        for start in range(0, len(ask), FIND_BATCH):
            part = ask[start : start + FIND_BATCH]
            reply, _ = self._op("find_missing", digests=part)
            lacking = _field(reply, "missing", list)
            self.known.update(set(part) - set(lacking))
            missing.extend(lacking)
        return missing

    def put_blobs(self, blobs: Mapping[str, bytes | memoryview], progress: Callable[[int], None] | None = None) -> int:
        """Upload blobs (digest → bytes); every item must come back `ok`. Returns the blobs' bytes (before any zstd).

        Requests of PUT_FRAME_BYTES, up to PUT_DEPTH of them in flight: the gateway verifies and stores one while
        the next is on the wire, where one at a time left each side idle half the time. They go to the gateway's
        upload endpoint where its hello names one (uploads.py), else as put_blobs frames on the socket; a put is
        idempotent, so requests the endpoint could not take go again as frames. `progress` gets the bytes sent so
        far after each request.
        """
        self._conn()  # its hello says whether the gateway takes uploads
        uploads = self._uploads()
        if uploads is not None:
            try:
                return self._put_uploads(uploads, blobs, progress)
            except UploadsUnavailable:
                self._uploads_off = True
                uploads.close()
        return self._put_frames(blobs, progress)

    def _put_requests(self, blobs: Mapping[str, bytes | memoryview]) -> Iterator[tuple[list[str], dict[str, Any], list[Any]]]:
        """Each put_blobs request: its digests, header and payload parts (zstd where it pays)."""
        for batch in _batches(((d, len(b)) for d, b in blobs.items()), self._limit(PUT_FRAME_BYTES, "max_batch_bytes")):
            if len(batch) == 1 and len(blobs[batch[0]]) > MAX_FRAME - 64 * 1024:
                raise GatewayError(
                    "too_large",
                    f"blob {batch[0]} is larger than a gateway frame ({MAX_FRAME // MiB} MiB) allows",
                )
            entries, parts, offset = [], [], 0
            for d in batch:
                frame = compress_if_it_pays(blobs[d]) if self.compress else None
                part = blobs[d] if frame is None else frame
                entries.append({"digest": d, "offset": offset, "length": len(part)})
                if frame is not None:
                    entries[-1]["codec"] = CODEC
                parts.append(part)
                offset += len(part)
            yield batch, {"op": "put_blobs", **encode_request("put_blobs", {"blobs": entries})}, parts

    def _put_frames(self, blobs: Mapping[str, bytes | memoryview], progress: Callable[[int], None] | None) -> int:
        sent = 0
        inflight: dict[str, list[str]] = {}
        try:
            for batch, header, parts in self._put_requests(blobs):
                while len(inflight) >= self._limit(PUT_DEPTH, "max_blobs_in_flight"):
                    self._put_reply(inflight)
                rid = self._next_id()
                self._send(encode_binary({"id": rid, **header}, parts), retry=not inflight)
                inflight[rid] = batch
                sent += sum(len(blobs[d]) for d in batch)
                if progress is not None:
                    progress(sent)
            while inflight:
                self._put_reply(inflight)
        except KernelhopError:
            if inflight:
                # Replies to the frames still in flight would meet the next request: start clean next time.
                self.close()
            raise
        except BaseException:
            self.close()
            raise
        return sent

    def _put_reply(self, inflight: dict[str, list[str]]) -> None:
        """Wait for the reply to one of the put_blobs frames in `inflight`, check it and take it off."""
        reply, _ = self._await(inflight, self.reply_timeout)
        self._check_put(inflight.pop(reply["re"]), reply)

    def _check_put(self, batch: list[str], reply: dict[str, Any]) -> None:
        results = {r.get("digest"): r for r in _field(reply, "results", list) if isinstance(r, dict)}
        for d in batch:
            r = results.get(d)
            if r is None:
                raise GatewayError("bad_reply", f"the gateway did not report on blob {d} it was sent")
            if r.get("code") != "ok":
                raise GatewayError(
                    str(r.get("code")), f"the gateway refused blob {d}: {r.get('message') or r.get('code')}"
                )
        self.known.update(batch)

    def _uploads(self) -> HttpUploads | None:
        """The gateway's upload endpoint, where its hello named one and it has not failed us."""
        if self._uploads_off or not self.agreed.blob_upload:
            return None
        url = upload_url(self.url, self.agreed.blob_upload)
        if self._http is None or self._http.url != url:
            tls = client_context(self.ca, self.fingerprint) if url.startswith("https://") else None
            self._http = HttpUploads(url, self.token, tls=tls, timeout=self.reply_timeout, stall_s=STALL_S)
        return self._http

    def _put_uploads(
        self, uploads: HttpUploads, blobs: Mapping[str, bytes | memoryview], progress: Callable[[int], None] | None
    ) -> int:
        depth = self._limit(PUT_DEPTH, "max_blobs_in_flight")
        sent = 0
        with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="kernelhop-upload") as pool:
            inflight: dict[Future[dict[str, Any]], list[str]] = {}
            try:
                for batch, header, parts in self._put_requests(blobs):
                    while len(inflight) >= depth:
                        self._upload_reply(inflight)
                    inflight[pool.submit(uploads.post, binary_head(header), parts)] = batch
                    sent += sum(len(blobs[d]) for d in batch)
                    if progress is not None:
                        progress(sent)
                while inflight:
                    self._upload_reply(inflight)
            except KernelhopError:
                # Refused: the requests in flight are let finish (their answers no longer matter), so that when the
                # hop says it failed, the gateway is done with its blobs.
                wait(inflight, timeout=self.reply_timeout)
                raise
            except BaseException:
                # Interrupted: the requests in flight are abandoned, their sockets closed.
                for f in inflight:
                    f.cancel()
                uploads.close()
                raise
        return sent

    def _upload_reply(self, inflight: dict[Future[dict[str, Any]], list[str]]) -> None:
        """Wait for one upload in `inflight` (in short slices, so the kernel's SIGINT still lands), check it."""
        while True:
            done, _ = wait(inflight, timeout=POLL_S, return_when=FIRST_COMPLETED)
            if done:
                break
        future = done.pop()
        batch = inflight.pop(future)
        try:
            reply = future.result()
        except UploadRefused as e:
            if e.status == 401:
                raise GatewayAuthError(
                    f"the gateway at {self.url} refused the token for an upload (HTTP 401). "
                    "Set KERNELHOP_TOKEN to the token `kernelhop gateway` printed when it started."
                ) from None
            raise GatewayError(str(e.error.get("code", "bad_reply")), str(e.error.get("message") or e)) from None
        except UploadCut as e:
            raise GatewayError(
                "connection_lost",
                f"the connection to the gateway at {self.url} was cut mid-upload ({e}); the local namespace is "
                "unchanged. Run the cell again once the gateway is back.",
            ) from None
        self._check_put(batch, reply)

    def get_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        """Download blobs, each checked against its digest; requests of GET_BATCH_BYTES, GET_DEPTH in flight, so
        the gateway reads the next batch from its disk while this one is on the wire."""
        wanted = list(dict.fromkeys(digests))
        out: dict[str, bytes] = {}
        inflight: dict[str, list[str]] = {}
        try:
            for batch in _batches(((d, digest_size(d)) for d in wanted), self._limit(GET_BATCH_BYTES, "max_batch_bytes")):
                while len(inflight) >= self._limit(GET_DEPTH, "max_blobs_in_flight"):
                    self._get_reply(inflight, out)
                rid = self._next_id()
                self._send({"id": rid, "op": "get_blobs", **encode_request("get_blobs", {"digests": batch})}, retry=not inflight)
                inflight[rid] = batch
            while inflight:
                self._get_reply(inflight, out)
        except KernelhopError:
            if inflight:
                self.close()  # replies still in flight would meet the next request
            raise
        except BaseException:
            self.close()
            raise
        return out

    def _get_reply(self, inflight: dict[str, list[str]], out: dict[str, bytes]) -> None:
        """Wait for the reply to one of the get_blobs requests in `inflight`; check its blobs into `out`."""
        reply, payload = self._await(inflight, self.reply_timeout)
        batch = inflight.pop(reply["re"])
        if payload is None:
            raise GatewayError("bad_reply", "the gateway answered get_blobs without a binary frame")
        for entry in _field(reply, "blobs", list):
            d = entry.get("digest") if isinstance(entry, dict) else None
            if d not in batch:
                continue
            if "offset" not in entry:
                raise GatewayError(
                    str(entry.get("code", "not_found")),
                    f"the gateway does not hold chunk {d} of the snapshot; the local namespace is unchanged",
                )
            start, length = entry["offset"], entry["length"]
            if not (
                isinstance(start, int) and isinstance(length, int) and 0 <= start <= start + length <= len(payload)
            ):
                raise GatewayError("bad_reply", f"the gateway gave blob {d} a range outside its frame")
            data = bytes(payload[start : start + length])
            if blob_digest(data) != d:
                raise GatewayError(
                    "digest_mismatch",
                    f"chunk {d} arrived corrupt (its bytes do not match its digest); the local namespace is unchanged",
                )
            out[d] = data
        absent = [d for d in batch if d not in out]
        if absent:
            raise GatewayError("bad_reply", f"the gateway left {len(absent)} requested blob(s) out, e.g. {absent[0]}")
        self.known.update(batch)

    def classes(self) -> dict[str, dict[str, Any]]:
        reply, _ = self._op("classes")
        return _field(reply, "classes", dict)

    def session_status(self, session: str) -> dict[str, Any]:
        """Where `session`'s cells run now: warm on a runtime (and for how long), or cold and why."""
        reply, _ = self._op("session_status", session=session)
        return _field(reply, "status", dict)

    def run(
        self,
        *,
        session: str,
        gpu_class: str,
        code: str,
        manifest: str,
        timeout_s: float,
        reach: Iterable[str] | None = None,
        notebook: str = "",
        cell: str = "",
    ) -> RunHandle:
        """Start a cell; read its events from the returned RunHandle. ``reach``: the names the cell can reach, for a
        lazy restore of only those on the runtime; None restores the whole snapshot. ``manifest``: the digest of the
        captured state's manifest (the wire calls it `snapshot`). ``notebook`` and ``cell`` label its GPU-seconds."""
        rid = self._next_id()
        fields = {
            "session": session,
            "gpu_class": gpu_class,
            "code": code,
            "snapshot": manifest,
            "timeout_s": timeout_s,
            "reach": None if reach is None else sorted(reach),
            "notebook": notebook,
            "cell": cell,
        }
        self._send({"id": rid, "op": "run", **encode_request("run", fields)})
        return RunHandle(self, rid)


class RunHandle:
    """The kernel's hold on one run: its events as they arrive, and `cancel`."""

    def __init__(self, client: GatewayConnection, rid: str):
        self.client = client
        self.id = rid
        self.final: dict[str, Any] | None = None

    def next_event(self, timeout: float = POLL_S) -> dict[str, Any] | None:
        """The next event (the final `done` included), None if none came within `timeout`.

        Raises GatewayError when the run ends with `ok: false` (unknown_class, runtime_lost, timeout, ...).
        """
        got = self.client._recv(timeout)
        if got is None:
            return None
        msg, _ = got
        if msg.get("re") != self.id and not (msg.get("re") is None and msg.get("ok") is False):
            return None
        if "ok" in msg:
            self.final = msg
            _raise_if_failed(msg)
            if msg.get("event") != "done":
                raise GatewayError("bad_reply", "the gateway ended the run without a `done` reply")
        return msg

    def cancel(self, wait: float = 2.0) -> dict[str, Any] | None:
        """Ask the gateway to stop the run; wait up to `wait` seconds for its final reply and return it."""
        ws = self.client._ws
        if self.final is not None or ws is None or ws.state is not State.OPEN:
            # Done already, or the connection that carried the run is gone (and the gateway ends runs with it).
            return self.final
        try:
            ws.send(json.dumps({"id": self.client._next_id(), "op": "cancel", **encode_request("cancel", {"run": self.id})}))
        except ConnectionClosed:
            self.client.close()
            return None
        deadline = time.monotonic() + wait
        while self.final is None and time.monotonic() < deadline:
            try:
                self.next_event(min(POLL_S, max(deadline - time.monotonic(), 0.0)))
            except GatewayError:
                if self.final is None:
                    break  # the connection failed, not the run: nothing more will come
                # else: `cancelled` (or any other ending) is the final reply we were waiting for
        if self.final is None:
            # Events of this run may still arrive: don't let them meet the next request.
            self.client.close()
        return self.final


def _raise_if_failed(msg: dict[str, Any]) -> None:
    if msg.get("ok") is False:
        err = msg.get("error")
        if not isinstance(err, dict):
            raise GatewayError("bad_reply", "the gateway reported a failure without an error object")
        missing = err.get("missing")
        raise GatewayError(
            str(err.get("code", "error")),
            str(err.get("message", "")) or str(err.get("code")),
            tuple(d for d in missing if isinstance(d, str)) if isinstance(missing, list) else (),
        )


def _field(reply: dict[str, Any], key: str, kind: type):
    value = reply.get(key)
    if not isinstance(value, kind):
        raise GatewayError("bad_reply", f"the gateway's reply lacks {key!r} ({kind.__name__})")
    return value


def _why(e: BaseException, open_timeout: float) -> str:
    if isinstance(e, PinMismatch):
        return str(e.args[1])
    if isinstance(e, ssl.SSLCertVerificationError):
        return (
            f"its TLS certificate did not verify ({e.verify_message}): set KERNELHOP_CA to the gateway's CA "
            "(DATA/tls/ca.pem for `--tls auto`) or KERNELHOP_FINGERPRINT to the sha256 it prints"
        )
    if isinstance(e, ssl.SSLError):
        return f"TLS failed ({e.reason or e}): is it a wss:// gateway?"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"unknown host ({e.strerror})"
    if isinstance(e, TimeoutError):
        return f"no answer within {open_timeout:g} s"
    if isinstance(e, InvalidHandshake):
        return (
            f"the server did not complete a WebSocket handshake ({e}); a gateway with TLS takes wss:// URLs only"
        )
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
