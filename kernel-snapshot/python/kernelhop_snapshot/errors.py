"""Errors raised by the blob stores and the restore path."""

from __future__ import annotations

from .digest import Digest


class CorruptBlobError(Exception):
    """Bytes do not match the digest that names them."""

    def __init__(self, digest: Digest, detail: str) -> None:
        super().__init__(f"blob {digest} is corrupt: {detail}")
        self.digest = digest


class MissingBlobError(KeyError):
    """A blob a manifest needs is not in the store."""

    def __init__(self, digest: Digest, where: str = "") -> None:
        suffix = f" in {where}" if where else ""
        super().__init__(f"blob {digest} is missing{suffix}")
        self.digest = digest

    def __str__(self) -> str:
        # KeyError's str() would quote the message; keep it readable.
        return str(self.args[0])
