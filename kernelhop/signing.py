"""Signed snapshot records: one Ed25519 key per user, the canonical bytes signed, and the list of trusted keys.

A snapshot's record (manifest digest, author, parents, code, environment...) is encoded as canonical JSON, the
encoding of the manifest; its BLAKE3-256 hex is the snapshot's id, and the author signs exactly those bytes. The
private key never leaves `$KERNELHOP_HOME/keys/<user>.ed25519` (mode 0600); the gateway holds the public key.
Trust is per key: restoring runs the pickles inside, so a snapshot signed by a key not in `trust.json` (and not
your own) is restored only after the user says `--trust`.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from kernelhop_snapshot.manifest import canonical_json

from .config import kernelhop_home

RECORD_KIND = "kernelhop.snapshot-record"
RECORD_VERSION = 1


class SigningError(Exception):
    """A key or trust file cannot be used; the message says which file and what to do."""


def record_bytes(record: Mapping[str, Any]) -> bytes:
    return canonical_json(record)


def record_id(record: Mapping[str, Any]) -> str:
    return blake3.blake3(record_bytes(record)).hexdigest()


def fingerprint(public_key_b64: str) -> str:
    """A short, stable name for a key, shown to people deciding whether to trust it."""
    return blake3.blake3(base64.b64decode(public_key_b64)).hexdigest()[:16]


def verify(record: Mapping[str, Any], signature_b64: str) -> bool:
    """Whether `signature_b64` is the record's key's signature of the record's canonical bytes."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(record.get("key", "")), validate=True))
        key.verify(base64.b64decode(signature_b64, validate=True), record_bytes(record))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


class Keyring:
    """The user's signing key and trusted keys, under `$KERNELHOP_HOME`."""

    def __init__(self, home: Path | None = None):
        self.home = home if home is not None else kernelhop_home()

    def key_path(self, user: str) -> Path:
        return self.home / "keys" / f"{user}.ed25519"

    def private_key(self, user: str) -> Ed25519PrivateKey:
        """The user's key, made on first use (readable by the owner only)."""
        path = self.key_path(user)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return self._create(path)
        except OSError as e:
            raise SigningError(f"cannot read your signing key {path}: {e.strerror or e}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as e:
            raise SigningError(
                f"{path} is not a PEM Ed25519 private key ({e}); move it away to make a new one"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"{path} holds a key that is not Ed25519; move it away to make a new one")
        return key

    def _create(self, path: Path) -> Ed25519PrivateKey:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self.private_key(path.stem)  # another process made it a moment ago: use theirs
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return key

    def public_key(self, user: str) -> str:
        raw = (
            self.private_key(user).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        return base64.b64encode(raw).decode()

    def sign(self, user: str, record: Mapping[str, Any]) -> str:
        return base64.b64encode(self.private_key(user).sign(record_bytes(record))).decode()

    # -- trust ------------------------------------------------------------------------------------------------

    @property
    def trust_path(self) -> Path:
        return self.home / "trust.json"

    def trusted(self) -> dict[str, dict[str, str]]:
        """Trusted public key (base64) → {user, added}."""
        try:
            data = json.loads(self.trust_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            raise SigningError(f"cannot read {self.trust_path} ({e}); fix or delete it") from None
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, dict):
            raise SigningError(f'{self.trust_path} must hold {{"keys": {{KEY: {{"user": NAME}}}}}}; fix or delete it')
        return keys

    def is_trusted(self, key: str, own_user: str | None) -> bool:
        if own_user is not None and self.key_path(own_user).exists() and key == self.public_key(own_user):
            return True
        return key in self.trusted()

    def trust(self, key: str, user: str) -> None:
        keys = self.trusted()
        keys[key] = {"user": user, "added": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.trust_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": keys}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.trust_path)
