"""Where the gateway is and which token it takes (ARCHITECTURE.md, "Discovery and auth").

Environment first (`KERNELHOP_GATEWAY`, `KERNELHOP_TOKEN`, `KERNELHOP_CA`, `KERNELHOP_FINGERPRINT`),
then `$KERNELHOP_HOME/gateway.json`, which a gateway writes when it starts. The URL may be a comma list of gateways
sharing one database and store ("Several gateways"): the kernel uses the first that answers. Read at every hop, so
`%env KERNELHOP_GATEWAY=...` takes effect without a restart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .tls import TlsSettingError, normalize_fingerprint

DEFAULT_PORT = 8731
WS_PATH = "/ws/v1"
DEFAULT_URL = f"ws://127.0.0.1:{DEFAULT_PORT}{WS_PATH}"


class ConfigError(Exception):
    """The gateway settings cannot be used as given."""


@dataclass(frozen=True)
class GatewayConfig:
    url: str
    token: str | None
    # Said in error messages, so a user knows which setting to fix.
    source: str
    # What a wss:// gateway is verified by (kernelhop/tls.py): its CA file or its certificate's pinned SHA-256.
    ca: str | None = None
    fingerprint: str | None = None
    # Every gateway named, `url` first: gateways on one database and store, any of which serves this kernel.
    urls: tuple[str, ...] = ()
    # Whether `token` goes to the other gateways of `urls` too: not a token read from a file the first one wrote.
    token_everywhere: bool = True


def normalize_urls(text: str) -> tuple[str, ...]:
    """A comma list of gateway URLs, each normalized; one URL is a list of one."""
    urls = tuple(dict.fromkeys(normalize_url(part) for part in text.split(",") if part.strip()))
    if not urls:
        raise ConfigError(f"gateway URL {text!r} names no gateway (for example {DEFAULT_URL})")
    return urls


def kernelhop_home(environ: Mapping[str, str] = os.environ) -> Path:
    home = environ.get("KERNELHOP_HOME")
    return Path(home).expanduser() if home else Path.home() / ".kernelhop"


def normalize_url(url: str) -> str:
    """`ws://host:port` (or http://, or a bare `host:port`) → `ws://host:port/ws/v1`."""
    text = url.strip()
    if "://" not in text:
        text = "ws://" + text
    parts = urlsplit(text)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ConfigError(f"gateway URL {url!r} must start with ws:// or wss:// (for example {DEFAULT_URL})")
    if not parts.hostname:
        raise ConfigError(f"gateway URL {url!r} names no host (for example {DEFAULT_URL})")
    try:
        _ = parts.port  # urlsplit checks the port only when asked: ask now, not at connect time
    except ValueError:
        raise ConfigError(f"gateway URL {url!r} has an invalid port (for example {DEFAULT_URL})") from None
    path = parts.path.rstrip("/") or WS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def read_gateway_file(path: Path) -> dict[str, str]:
    """The `url`, `token`, `ca` and `fingerprint` a gateway wrote; empty when there is no file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); delete it or restart `kernelhop gateway`") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object with keys url and token")
    out: dict[str, str] = {}
    for key in ("url", "token", "ca", "fingerprint"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key!r} must be a string")
        out[key] = value
    return out


ADMIN_TOKEN_FILE = "admin-token"


def discover(environ: Mapping[str, str] = os.environ) -> GatewayConfig:
    """Where the gateway is and the token to give it. Without KERNELHOP_TOKEN, on the gateway's own host, the token is
    the admin's that the gateway wrote to `admin-token` (0600): whoever can read that file runs the gateway, as with
    `kernelhop up`, so a headless run there (nbclient, papermill, the `kernelhop` command) needs no token by hand."""
    home = kernelhop_home(environ)
    file_path = home / "gateway.json"
    written = read_gateway_file(file_path)
    file_urls = normalize_urls(written["url"]) if "url" in written else None
    file_url = file_urls[0] if file_urls else None

    env_url = environ.get("KERNELHOP_GATEWAY", "").strip()
    if env_url:
        urls, source = normalize_urls(env_url), "KERNELHOP_GATEWAY"
    elif file_urls:
        urls, source = file_urls, str(file_path)
    else:
        urls, source = (DEFAULT_URL,), "the default"
    url = urls[0]

    token = environ.get("KERNELHOP_TOKEN") or None
    if token is not None:
        token_source = "from KERNELHOP_TOKEN"
    elif file_url == url and written.get("token"):
        # Only hand the file's token to the gateway that wrote it: never send a local secret to another host.
        token, token_source = written["token"], f"from {file_path}"
    elif file_url == url and (home / ADMIN_TOKEN_FILE).is_file():
        admin_file = home / ADMIN_TOKEN_FILE
        try:
            token = admin_file.read_text(encoding="utf-8").strip() or None
        except OSError as e:
            raise ConfigError(f"cannot read {admin_file}: {e.strerror or e}") from None
        token_source = f"from {admin_file}"
    elif environ.get("JUPYTERHUB_API_TOKEN") and _may_carry_hub_token(url):
        # Under JupyterHub the user's server holds the Hub's token for that user: a gateway started with
        # --jupyterhub takes it as the user's identity, so nobody runs `kernelhop user add`.
        token, token_source = environ["JUPYTERHUB_API_TOKEN"], "from JUPYTERHUB_API_TOKEN (the Hub's)"
    else:
        token_source = "not set"
    # The file's CA and fingerprint are its gateway's: another URL gets only what the environment says.
    ca = environ.get("KERNELHOP_CA") or (written.get("ca") if file_url == url else None)
    fingerprint = environ.get("KERNELHOP_FINGERPRINT") or (written.get("fingerprint") if file_url == url else None)
    if fingerprint is not None:
        try:
            fingerprint = normalize_fingerprint(fingerprint)
        except TlsSettingError as e:
            raise ConfigError(str(e)) from None
    return GatewayConfig(
        url=url,
        token=token,
        source=f"URL from {source}, token {token_source}",
        ca=ca,
        fingerprint=fingerprint,
        urls=urls,
        token_everywhere=not token_source.startswith(f"from {home}"),
    )


def _may_carry_hub_token(url: str) -> bool:
    """The Hub's token opens the user's server: it goes over TLS, or to this host, never in clear across a network."""
    parts = urlsplit(url)
    return parts.scheme == "wss" or parts.hostname in ("127.0.0.1", "localhost", "::1")


# The most a hop re-runs to rebuild an unpicklable variable on the runtime: the seconds its cells took when they
# ran here (kernelhop/client/recompute.py). `KERNELHOP_RECIPE_MAX_S` changes it, read at every hop.
DEFAULT_RECIPE_MAX_S = 1.0


def recipe_max_s(environ: Mapping[str, str] = os.environ) -> float:
    text = environ.get("KERNELHOP_RECIPE_MAX_S", "").strip()
    if not text:
        return DEFAULT_RECIPE_MAX_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(
            f"KERNELHOP_RECIPE_MAX_S must be a number of seconds, 0 or more (got {text!r}); "
            f"unset it for the default {DEFAULT_RECIPE_MAX_S:g} s"
        )
    return value
