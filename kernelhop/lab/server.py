"""The Jupyter server side of the JupyterLab extension: how the browser reaches the gateway.

- `GET /kernelhop/config`: the gateway settings the server found (the kernel's own discovery, kernelhop.config).
- `/kernelhop/ws`: a WebSocket relayed to the gateway. The gateway's address is the kernel's view of it (often
  127.0.0.1), which a remote browser (Binder, JupyterHub) cannot reach; relaying through the Jupyter server also
  keeps the gateway token on the server. A browser cannot read the HTTP status of a refused upgrade, so the relay
  closes the browser's socket with a code that says why (CLOSE_* below, mirrored in extension/src/gatewayClient.ts).

Enabled by jupyter-config/server-config/kernelhop.json, which the wheel installs into jupyter_server_config.d.
"""

from __future__ import annotations

import json
from typing import Any

import tornado.ioloop
import tornado.web
import tornado.websocket
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import ensure_async, url_path_join
from tornado.httpclient import HTTPClientError, HTTPRequest

from ..tls import TlsSettingError, client_context
from ..config import ConfigError, discover

CLOSE_TOKEN_REFUSED = 4401
CLOSE_GATEWAY_DOWN = 4502
# The gateway's own maxPayload (docs/ARCHITECTURE.md): get_blobs replies reach 48 MiB plus a header.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
CONNECT_TIMEOUT_S = 5.0
# The gateways that did not answer the relay's last try of them, across the browser's connections.
_unanswered: set[str] = set()
# A WebSocket close reason is at most 123 bytes.
MAX_REASON_BYTES = 123

# Running cells on a GPU is executing code, so the relay asks for what opening a kernel's socket asks for.
AUTH_RESOURCE = "kernels"


class ConfigHandler(APIHandler):
    """The gateway settings as the server resolved them, so the UI can say which setting to fix.

    The token itself stays on the server: the browser only learns whether one is set.
    """

    auth_resource = AUTH_RESOURCE

    @tornado.web.authenticated
    @authorized
    def get(self) -> None:
        try:
            config = discover()
        except ConfigError as e:
            self.finish(json.dumps({"gateway_url": None, "source": None, "token_set": False, "error": str(e)}))
            return
        self.finish(
            json.dumps(
                {
                    "gateway_url": config.url,
                    "source": config.source,
                    "token_set": config.token is not None,
                    "error": None,
                }
            )
        )


class GatewayRelayHandler(WebSocketMixin, tornado.websocket.WebSocketHandler, JupyterHandler):
    """Relays frames between the browser and the gateway, both ways, text and binary alike."""

    auth_resource = AUTH_RESOURCE
    _upstream: tornado.websocket.WebSocketClientConnection | None = None

    @property
    def max_message_size(self) -> int:
        return MAX_MESSAGE_SIZE

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        if not await ensure_async(self.authorizer.is_authorized(self, self.current_user, "execute", AUTH_RESOURCE)):
            raise tornado.web.HTTPError(403)
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open()  # WebSocketMixin's ping loop towards the browser
        try:
            config = discover()
        except ConfigError as e:
            self._close(CLOSE_GATEWAY_DOWN, str(e))
            return
        # Several gateways named: the first that answers, those that did not last time tried after the others (the
        # kernel's rule, client/failover.py); the browser reconnects on a close, so a gateway lost later is left then.
        urls = sorted(config.urls or (config.url,), key=lambda u: u in _unanswered)
        down: list[str] = []
        for url in urls:
            # A token read from the file a gateway wrote goes to that gateway only, never to another host.
            token = config.token if url == config.url or config.token_everywhere else None
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                tls = client_context(config.ca, config.fingerprint) if url.startswith("wss://") else None
            except TlsSettingError as e:
                self._close(CLOSE_GATEWAY_DOWN, str(e))
                return
            request = HTTPRequest(url, headers=headers, connect_timeout=CONNECT_TIMEOUT_S, ssl_options=tls)
            try:
                self._upstream = await tornado.websocket.websocket_connect(request, max_message_size=MAX_MESSAGE_SIZE)
            except HTTPClientError as e:
                if e.code in (401, 403):
                    self._close(CLOSE_TOKEN_REFUSED, f"the gateway at {url} refused the token ({config.source})")
                    return
                # 599 is tornado's own code for a connect that timed out or was cut; its message says which.
                down.append(f"{url}: {e.message if e.code == 599 else f'HTTP {e.code}'}")
            except OSError as e:
                down.append(f"{url}: {e.strerror or e}")
            else:
                _unanswered.discard(url)
                break
            _unanswered.add(url)
        else:
            self._close(CLOSE_GATEWAY_DOWN, "; ".join(down))
            return
        assert self._upstream is not None
        if self.ws_connection is None:
            # The browser left while the gateway was being reached.
            self._upstream.close()
            return
        tornado.ioloop.IOLoop.current().add_callback(self._relay_from_gateway, self._upstream)

    async def _relay_from_gateway(self, upstream: tornado.websocket.WebSocketClientConnection) -> None:
        while True:
            message = await upstream.read_message()
            if message is None:
                break
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except tornado.websocket.WebSocketClosedError:
                upstream.close()
                return
        reason = upstream.close_reason or "the gateway closed the connection"
        self._close(CLOSE_GATEWAY_DOWN, reason)

    async def on_message(self, message: str | bytes) -> None:
        upstream = self._upstream
        if upstream is None:
            # open() failed and closed the socket; tornado holds frames back until open() returns, so none are lost.
            return
        try:
            await upstream.write_message(message, binary=isinstance(message, bytes))
        except tornado.websocket.WebSocketClosedError:
            self._close(CLOSE_GATEWAY_DOWN, "the gateway closed the connection")

    def on_close(self) -> None:
        super().on_close()
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _close(self, code: int, reason: str) -> None:
        if self.ws_connection is not None:
            self.close(code, _clip(reason))


def _clip(reason: str) -> str:
    data = reason.encode("utf-8")
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[: MAX_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "kernelhop.lab.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    base_url = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base_url, "kernelhop", "config"), ConfigHandler),
            (url_path_join(base_url, "kernelhop", "ws"), GatewayRelayHandler),
        ],
    )
