"""One file holding a snapshot, to hand it over outside the gateway: `kernelhop snapshot export|import`.

Layout: the 8 bytes ``KHSNAP1\\n``, a u32 big-endian N, N bytes of canonical JSON ``{id, record, signature, blobs}``
(``blobs``: the manifest's digest, then every chunk digest), then each blob's bytes in that order (a digest says its
size). Import believes nothing in the file: the record must hash to the id and verify against its key, every blob
must hash to its digest, and the blobs must be exactly the manifest and the chunks it names.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from kernelhop_snapshot import Digest, Manifest, ManifestError, digest_of
from kernelhop_snapshot.manifest import canonical_json

from ..signing import record_bytes, record_id, verify
from .gateway import BATCH_BYTES, GatewayError
from .snapshots import Snapshots, TamperedSnapshot, short

MAGIC = b"KHSNAP1\n"
# The header holds one digest (~75 bytes) per chunk: 64 MiB is ~900k chunks, over 200 GiB of state.
MAX_HEADER = 64 * 1024 * 1024


def _batches(digests: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    batch: list[str] = []
    total = 0
    for d in digests:
        size = Digest.parse(d).size
        if batch and total + size > BATCH_BYTES:
            out.append(batch)
            batch, total = [], 0
        batch.append(d)
        total += size
    if batch:
        out.append(batch)
    return out


def export_snapshot(api: Snapshots, ref: str, path: Path) -> tuple[str, int]:
    """Write the snapshot to `path`; returns its id and the bytes written. Verifies what it writes."""
    sid, manifest = api.manifest_of(ref)
    reply = api.get(sid)
    record, signature = reply["record"], reply["signature"]
    manifest_digest = str(record["manifest"])
    chunks = [str(d) for d in sorted(manifest.blob_digests())]
    header = canonical_json({"id": sid, "record": record, "signature": signature, "blobs": [manifest_digest, *chunks]})
    tmp = path.with_name(path.name + ".part")
    written = 0
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack(">I", len(header)) + header)
        f.write(api.store.get(Digest.parse(manifest_digest)))
        written = len(MAGIC) + 4 + len(header) + Digest.parse(manifest_digest).size
        for batch in _batches(chunks):
            got = api.client.get_blobs(batch)  # each verified against its digest
            for d in batch:
                f.write(got[d])
                written += len(got[d])
    tmp.replace(path)
    return sid, written


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TamperedSnapshot(f"the file ends inside {what}: it is truncated")
    return data


def _parse_header(data: bytes, path: Path) -> tuple[str, dict[str, Any], str, list[str]]:
    """The header's id, record, signature and blob digests, each of its type, or TamperedSnapshot."""
    try:
        header = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise TamperedSnapshot(f"{path}: the header is not JSON ({e})") from None
    shape = "{id: str, record: object, signature: str, blobs: [digest, ...]}"
    if not isinstance(header, dict):
        raise TamperedSnapshot(f"{path}: the header is not valid (it must be {shape})")
    sid, record, signature, blobs = (header.get(k) for k in ("id", "record", "signature", "blobs"))
    if not (
        isinstance(sid, str)
        and isinstance(record, dict)
        and isinstance(signature, str)
        and isinstance(blobs, list)
        and all(isinstance(b, str) for b in blobs)
    ):
        raise TamperedSnapshot(f"{path}: the header is not valid (it must be {shape})")
    try:
        record_bytes(record)  # a record with no canonical form (NaN) has no id either
        for b in blobs:
            Digest.parse(b)
    except ValueError as e:
        raise TamperedSnapshot(f"{path}: the header is not valid ({e})") from None
    return sid, record, signature, blobs


def import_snapshot(api: Snapshots, path: Path, *, name: str | None = None) -> str:
    """Verify the file, upload what the gateway lacks (chunks, then the manifest) and save it; returns the id."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise TamperedSnapshot(f"{path} is not a kernelhop snapshot file (it does not start with {MAGIC!r})")
        (n,) = struct.unpack(">I", _read_exact(f, 4, "the header length"))
        if n > MAX_HEADER:
            raise TamperedSnapshot(f"{path}: header of {n} bytes is implausibly large")
        sid, record, signature, blobs = _parse_header(_read_exact(f, n, "the header"), path)
        if record_id(record) != sid or not verify(record, signature):
            raise TamperedSnapshot(f"{path}: the record does not match its id or its signature; refused")
        if not blobs or blobs[0] != record.get("manifest"):
            raise TamperedSnapshot(f"{path}: the first blob is not the manifest the record names; refused")
        manifest_digest = blobs[0]
        manifest_bytes = _read_exact(f, Digest.parse(manifest_digest).size, "the manifest")
        if str(digest_of(manifest_bytes)) != manifest_digest:
            raise TamperedSnapshot(f"{path}: the manifest was altered after signing; refused")
        try:
            manifest = Manifest.from_bytes(manifest_bytes)
        except ManifestError as e:
            raise TamperedSnapshot(f"{path}: the manifest is not valid ({e}); refused") from None
        chunks = blobs[1:]
        if sorted(chunks) != sorted(str(d) for d in manifest.blob_digests()):
            raise TamperedSnapshot(f"{path}: the chunks listed are not the ones the manifest names; refused")
        missing = set(api.client.find_missing(chunks))
        for batch in _batches(chunks):
            upload: dict[str, bytes] = {}
            for d in batch:
                data = _read_exact(f, Digest.parse(d).size, f"chunk {d}")
                if str(digest_of(data)) != d:
                    raise TamperedSnapshot(f"{path}: chunk {d} was altered after signing; refused, nothing saved")
                if d in missing:
                    upload[d] = data
            if upload:
                api.client.put_blobs(upload)
    api.client.put_blobs({manifest_digest: manifest_bytes})
    mine = record.get("author") == api.user() and record.get("key") == api.ensure_key()
    fields = {"record": record, "signature": signature, "import": not mine}
    if name is not None:
        fields["name"] = name
    try:
        return str(api.request("snapshot_save", **fields)["snapshot"])
    except GatewayError as e:
        raise GatewayError(e.code, f"snapshot {short(sid)} from {path} was not saved: {e.message}") from None
