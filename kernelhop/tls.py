"""How the kernel side checks a wss:// gateway is the real one (ARCHITECTURE.md, "Discovery and auth").

A CA file (`KERNELHOP_CA`; a gateway started with `--tls auto` keeps it in DATA/tls/ca.pem and names it in
gateway.json), or a pinned certificate fingerprint (`KERNELHOP_FINGERPRINT`, which the gateway prints), or else the
system's CAs. A pin is checked as soon as the TLS handshake ends, before a byte of the request (and its token) is sent.
"""

from __future__ import annotations

import hashlib
import re
import ssl


class TlsSettingError(ValueError):
    """A CA file or fingerprint that cannot be used."""


def normalize_fingerprint(text: str) -> str:
    """`AB:CD:...`, `abcd...` or `sha256:abcd...` → `AB:CD:...` (as the gateway and openssl print it)."""
    hexdigits = re.sub(r"^sha256[:=]", "", text.strip(), flags=re.IGNORECASE).replace(":", "").upper()
    if not re.fullmatch(r"[0-9A-F]{64}", hexdigits):
        raise TlsSettingError(
            f"KERNELHOP_FINGERPRINT {text!r} is not a SHA-256 (64 hex digits, colons allowed): copy it from the line "
            "'kernelhop gateway TLS certificate sha256 ...' the gateway printed"
        )
    return ":".join(hexdigits[i : i + 2] for i in range(0, 64, 2))


def fingerprint_of(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


class PinMismatch(ssl.SSLCertVerificationError):
    """The gateway's certificate is not the pinned one."""


class _PinnedSocket(ssl.SSLSocket):
    # Blocking callers (websockets) and non-blocking ones (tornado) both end the handshake here.
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        pin = getattr(self.context, "kernelhop_pin", None)
        der = self.getpeercert(binary_form=True)
        seen = fingerprint_of(der) if der else "(no certificate)"
        if pin is not None and seen != pin:
            self.close()
            raise PinMismatch(
                ssl.SSL_ERROR_SSL,
                f"the gateway's certificate has sha256 {seen}, not the pinned {pin} (KERNELHOP_FINGERPRINT); "
                "nothing was sent. If the gateway's certificate was replaced, pin the fingerprint it prints now",
            )


def client_context(ca: str | None, fingerprint: str | None) -> ssl.SSLContext:
    """The SSL context for a wss:// gateway: pinned, else verified against `ca`, else against the system's CAs."""
    if fingerprint is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # The pin stands in for the chain and the host name: the certificate itself is what is trusted.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.sslsocket_class = _PinnedSocket
        ctx.kernelhop_pin = normalize_fingerprint(fingerprint)  # type: ignore[attr-defined]
        return ctx
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise TlsSettingError(
            f"cannot use {ca} as the gateway's CA (KERNELHOP_CA): {getattr(e, 'strerror', None) or e}"
        ) from None
