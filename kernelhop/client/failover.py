"""Several gateways (ARCHITECTURE.md, "Several gateways"): which of the gateways the settings name an operation goes
to, and the one rule for an operation whose gateway goes away, used by hops, `%snapshot`, `%gpu` and the
`kernelhop snapshot`/`user`/`usage` commands alike.

The rule (`Gateways.call`), each gateway tried at most once per operation:

- unreachable (`GatewayUnreachable`): the request never left, so the operation goes on through the next gateway,
  with a note ("the gateway at A is gone (unreachable); this hop goes on through B");
- the connection closed mid-request (`connection_lost`): an operation that only reads is sent again through the next
  gateway, with the same note; one that writes is not, since the gateway may have applied it before it went, and it
  fails saying so;
- once an operation has begun something that must not happen twice (a hop whose cell started), it is never sent
  again; when that gateway is lost (`gateway_lost`) the next operation goes through the next gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..config import discover
from .gateway import GatewayConnection, GatewayError, GatewayUnreachable

T = TypeVar("T")


def _never() -> bool:
    return False


class Gateways:
    """The gateways the settings name, the one in use first, with one connection to it."""

    def __init__(self, warn: Callable[[str], None], *, kept: str = "the local namespace is unchanged"):
        """``warn`` shows the failover note; ``kept`` says, in a failure, what the user keeps."""
        self.warn = warn
        self.kept = kept
        # The gateways named, the one in use first (a dead one goes to the back).
        self.urls: list[str] = []
        self._settings: tuple[Any, ...] | None = None
        self._client: GatewayConnection | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def client(self) -> GatewayConnection:
        """The connection to the gateway in use; a new one when the settings changed since the last call (they are
        read each time, as a kernel's may change between cells), or when the one in use was given up."""
        cfg = discover()
        seen = (cfg.urls or (cfg.url,), cfg.token, cfg.token_everywhere, cfg.ca, cfg.fingerprint, cfg.source)
        if seen != self._settings:
            self.close()
            self._settings = seen
            self.urls = list(seen[0])
        if self._client is None:
            url = self.urls[0]
            # A token read from the file a gateway wrote goes to that gateway only, never to another host.
            token = cfg.token if url == cfg.url or cfg.token_everywhere else None
            self._client = GatewayConnection(url, token, source=cfg.source, ca=cfg.ca, fingerprint=cfg.fingerprint)
        return self._client

    def fail_over(self, why: str, what: str, *, say: bool = True) -> GatewayConnection | None:
        """The gateway in use went away (or never answered): the next one named, the dead one last; None when
        there is no other."""
        if len(self.urls) < 2:
            return None
        dead = self.urls.pop(0)
        self.urls.append(dead)
        self.close()
        client = self.client()
        if say:
            self.warn(f"kernelhop: the gateway at {dead} is gone ({why}); this {what} goes on through {client.url}")
        return client

    def call(
        self,
        op: Callable[[GatewayConnection], T],
        *,
        what: str,
        writes: bool = False,
        begun: Callable[[], bool] = _never,
    ) -> T:
        """``op`` through the gateway in use, and through the next ones by the rule above. ``what`` names the
        operation in the note ("hop", "%snapshot list"); ``writes``: it changes something at the gateway, so it is
        not sent again after a connection closed mid-request; ``begun``: it did what must not be done twice."""
        client = self.client()
        tries = len(self.urls)
        while True:
            try:
                return op(client)
            except GatewayUnreachable:
                if begun() or tries < 2 or (other := self.fail_over("unreachable", what)) is None:
                    raise
            except GatewayError as e:
                if e.code == "gateway_lost":
                    self.fail_over("its connection closed", what, say=False)
                    raise
                if e.code != "connection_lost" or begun():
                    raise
                if writes:
                    raise GatewayError(
                        "connection_lost",
                        f"the connection to the gateway at {client.url} closed before it answered {what}; it may "
                        "have been done there, so it is not sent again (check, then run it again if it was not); "
                        f"{self.kept}",
                    ) from None
                if tries < 2 or (other := self.fail_over("its connection closed", what)) is None:
                    raise
            tries -= 1
            client = other
