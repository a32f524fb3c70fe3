"""put_blobs over the gateway's HTTP upload endpoint (Capabilities.blob_upload; ARCHITECTURE.md, "Kernel and browser
↔ gateway"): the same request as a put_blobs frame, sent as a POST body straight from the blobs' own buffers.

Why not the WebSocket: a client must mask every byte of a frame it sends, and the websockets library builds each
frame as a fresh copy; on loopback that was most of an upload's time in the kernel. An HTTP body goes from the
chunks' memory to the socket as it is.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class UploadsUnavailable(Exception):
    """The endpoint is not there to use (an older gateway, a proxy that passes only the WebSocket): the frames must
    go over the WebSocket instead."""


class UploadCut(Exception):
    """The connection failed or was cut mid-request (the gateway gone, a link down): what the gateway stored of the
    request is unknown."""


class UploadRefused(Exception):
    """The gateway answered the upload with an error: ``status`` is the HTTP status, ``error`` its {code, message}."""

    def __init__(self, status: int, error: dict[str, Any]):
        super().__init__(f"HTTP {status}: {error.get('message') or error.get('code')}")
        self.status = status
        self.error = error


def upload_url(ws_url: str, path: str) -> str:
    """The endpoint ``path`` names under the WebSocket API's URL, in http(s) for ws(s)."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, f"{parts.path.rstrip('/')}/{path}", parts.query, ""))


class HttpUploads:
    """Keep-alive connections to one upload endpoint, one per request in flight; safe to use from several threads."""

    def __init__(
        self, url: str, token: str | None, *, tls: ssl.SSLContext | None, timeout: float, stall_s: float
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._token = token
        self._tls = tls
        self._timeout = timeout
        self._stall_s = stall_s
        self._idle: list[http.client.HTTPConnection] = []
        self._busy: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def post(self, head: bytes, parts: Sequence[bytes | memoryview]) -> dict[str, Any]:
        """One put_blobs request (``head``: its length prefix and JSON header; ``parts``: the payload); returns the
        reply's JSON. Raises UploadsUnavailable where the endpoint is not there to use, UploadCut where the
        connection failed, UploadRefused for an error the gateway answered."""
        with self._lock:
            idle = self._idle.pop() if self._idle else None
        try:
            response, body, conn = self._send(idle or self._connect(), head, parts)
        except (OSError, http.client.HTTPException) as e:
            if idle is None:
                raise UploadCut(f"{type(e).__name__}: {e}") from None
            # A kept-alive connection the gateway closed while idle (Node closes them after 5 s): once more, anew.
            try:
                response, body, conn = self._send(self._connect(), head, parts)
            except (OSError, http.client.HTTPException) as e:
                raise UploadCut(f"{type(e).__name__}: {e}") from None
        if response.status in (404, 405, 426) or not response.getheader("Content-Type", "").startswith("application/json"):
            conn.close()
            raise UploadsUnavailable(f"{self.url} answered HTTP {response.status}")
        with self._lock:
            self._idle.append(conn)
        try:
            reply = json.loads(body)
        except ValueError:
            raise UploadsUnavailable(f"{self.url} answered HTTP {response.status} with no JSON") from None
        if response.status != 200 or reply.get("ok") is not True:
            error = reply.get("error") if isinstance(reply.get("error"), dict) else {"code": "bad_reply"}
            raise UploadRefused(response.status, error)
        return reply

    def _send(
        self, conn: http.client.HTTPConnection, head: bytes, parts: Sequence[bytes | memoryview]
    ) -> tuple[http.client.HTTPResponse, bytes, http.client.HTTPConnection]:
        """The request on ``conn``: its response and body; ``conn`` is closed if that fails."""
        with self._lock:
            self._busy.add(conn)
        try:
            conn.putrequest("POST", self._target, skip_accept_encoding=True)
            if self._token:
                conn.putheader("Authorization", f"Bearer {self._token}")
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(len(head) + sum(len(memoryview(p)) for p in parts)))
            conn.endheaders()
            conn.send(head)
            for part in parts:
                conn.send(part)
            response = conn.getresponse()
            return response, response.read(), conn
        except BaseException:
            conn.close()
            raise
        finally:
            with self._lock:
                self._busy.discard(conn)

    def _connect(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        conn.connect()
        # As on the WebSocket: a link that dies mid-send fails the upload within stall_s, not TCP's ~15 minutes.
        if hasattr(socket, "TCP_USER_TIMEOUT") and conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self._stall_s * 1000))
        return conn

    def close(self) -> None:
        """Close every connection, those of requests in flight too (their threads then fail at once)."""
        with self._lock:
            conns, self._idle = [*self._idle, *self._busy], []
        for conn in conns:
            if conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            conn.close()
