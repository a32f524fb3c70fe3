"""Snapshots at the gateway, for the `%snapshot` magics, the `kernelhop snapshot` command and export/import.

Built on the kernel's own GatewayConnection and chunk store (the Hopper's), so a snapshot moves only chunks the gateway
lacks and a restore fetches only chunks this kernel lacks. Every read is verified here, whatever the gateway says:
the record must hash to the snapshot's id and carry a valid signature of its key, the manifest and every chunk must
hash to their digests (GatewayConnection.get_blobs checks each), and the key must be trusted before a pickle runs.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kernelhop_snapshot import Digest, Group, Manifest, ManifestError

from ..signing import RECORD_KIND, RECORD_VERSION, Keyring, fingerprint, record_id, verify
from .gateway import GatewayConnection, GatewayError, KernelhopError


class SnapshotError(KernelhopError):
    """A snapshot operation failed; the message says why and what to do."""


class TamperedSnapshot(SnapshotError):
    """The snapshot's record, manifest or a chunk does not match what its author signed: refused."""


class UntrustedSnapshot(SnapshotError):
    """Signed by a key the user has not trusted: restoring would run its pickles, so it needs `--trust`."""


@dataclass
class Opened:
    """A snapshot whose record and signature verified, with its manifest (verified against its digest)."""

    id: str
    record: dict[str, Any]
    signature: str
    info: dict[str, Any]
    manifest: Manifest
    manifest_bytes: bytes

    @property
    def author(self) -> str:
        return str(self.record["author"])


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def short(snapshot_id: str) -> str:
    return snapshot_id[:12]


class Snapshots:
    """Snapshot operations over one gateway connection and one local chunk store."""

    def __init__(self, client: GatewayConnection, store: Any, keyring: Keyring | None = None):
        self.client = client
        self.store = store
        self.keyring = keyring or Keyring()
        self._me: dict[str, Any] | None = None

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        reply, _ = self.client._op(op, **fields)
        return reply

    def share(self, ref: str, *, with_user: str | None, link: bool, expires_s: float | None) -> dict[str, Any]:
        """Share `ref` read-only with a user, or as a link when `link`; the magic and the CLI both come here."""
        fields: dict[str, Any] = {"ref": ref}
        if link:
            fields["link"] = True
        else:
            fields["with"] = with_user
        if expires_s is not None:
            fields["expires_s"] = expires_s
        return self.request("snapshot_share", **fields)

    # -- identity ---------------------------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        if self._me is None:
            self._me = self.request("whoami")
        return self._me

    def user(self) -> str:
        return str(self.me()["user"])

    def ensure_key(self) -> str:
        """The user's public key, registered with the gateway (a key is made on first use)."""
        me = self.me()
        key = self.keyring.public_key(self.user())
        if me.get("public_key") != key:
            self.request("key_register", public_key=key)
            me["public_key"] = key
        return key

    # -- blobs ------------------------------------------------------------------------------------------------

    def upload(self, manifest: Manifest, digest: Digest) -> None:
        """Chunks first, the manifest last: the gateway refuses to name what is not all there."""
        chunks = [str(d) for d in sorted(manifest.blob_digests())]
        missing = set(self.client.find_missing([*chunks, str(digest)]))
        lacking = [d for d in chunks if d in missing]
        if lacking:
            self.client.put_blobs({d: self.store.get(Digest.parse(d)) for d in lacking})
        if str(digest) in missing:
            self.client.put_blobs({str(digest): self.store.get(digest)})

    def fetch(self, digests: Iterable[str]) -> None:
        """Bring into the local store the blobs it lacks; each is checked against its digest on arrival."""
        wanted = [d for d in dict.fromkeys(digests) if not self.store.has(Digest.parse(d))]
        if not wanted:
            return
        try:
            got = self.client.get_blobs(wanted)
        except GatewayError as e:
            if e.code == "digest_mismatch":
                raise TamperedSnapshot(
                    f"refused: {e.message.split(';')[0]} — the snapshot was altered after it was signed; "
                    "nothing was restored"
                ) from None
            raise
        for d, data in got.items():
            self.store.put(Digest.parse(d), data)

    # -- save -------------------------------------------------------------------------------------------------

    def save(
        self,
        manifest: Manifest,
        digest: Digest,
        *,
        parents: list[str],
        message: str,
        notebook: str | None,
        cells: list[str],
        environment: Mapping[str, Any],
        name: str | None = None,
    ) -> str:
        """Upload this state's blobs, then sign and save a record of it; returns the snapshot id."""
        fields = dict(
            parents=parents, message=message, notebook=notebook, cells=cells, environment=environment, name=name
        )
        self.upload(manifest, digest)
        try:
            return self.save_record(manifest=str(digest), **fields)
        except GatewayError as e:
            if e.code != "missing_blobs":
                raise
            # The gateway dropped chunks we took it to hold (gc, a wiped store): send them again, once.
            self.client.known.clear()
            self.upload(manifest, digest)
            return self.save_record(manifest=str(digest), **fields)

    def fork(self, opened: Opened, *, name: str | None = None) -> str:
        """A new snapshot of the same state whose parent is `opened`: metadata only, no chunk moves."""
        return self.save_record(
            manifest=str(opened.record["manifest"]),
            parents=[opened.id],
            message=f"fork of {short(opened.id)}",
            notebook=opened.record.get("notebook"),
            cells=[],
            environment=opened.record["environment"],
            name=name,
        )

    def save_record(
        self,
        *,
        manifest: str,
        parents: list[str],
        message: str,
        notebook: str | None,
        cells: list[str],
        environment: Mapping[str, Any],
        name: str | None,
    ) -> str:
        """Sign and save a record over a manifest the gateway holds for this user (or shared with it)."""
        key = self.ensure_key()
        record = {
            "kind": RECORD_KIND,
            "version": RECORD_VERSION,
            "manifest": manifest,
            "author": self.user(),
            "key": key,
            "parents": parents,
            "created": utc_now(),
            "message": message,
            "notebook": notebook,
            "cells": cells,
            "environment": dict(environment),
        }
        fields: dict[str, Any] = {"record": record, "signature": self.keyring.sign(self.user(), record)}
        if name is not None:
            fields["name"] = name
        return str(self.request("snapshot_save", **fields)["snapshot"])

    # -- open (verify) ----------------------------------------------------------------------------------------

    def get(self, ref: str) -> dict[str, Any]:
        return self.request("snapshot_get", ref=ref)

    def open(self, ref: str, *, trust: bool = False, say: Callable[[str], None] = print) -> Opened:
        """Fetch and verify a snapshot's record, signature, trust and manifest; nothing is restored yet."""
        reply = self.get(ref)
        record, signature, info = reply.get("record"), reply.get("signature"), reply.get("snapshot")
        if not isinstance(record, dict) or not isinstance(signature, str) or not isinstance(info, dict):
            raise GatewayError("bad_reply", "the gateway's snapshot_get reply lacks record, signature or snapshot")
        sid = str(info.get("id"))
        if record_id(record) != sid:
            raise TamperedSnapshot(
                f"refused: snapshot {short(sid)}'s record does not hash to its id — its metadata was altered; "
                "nothing was restored"
            )
        if not verify(record, signature):
            raise TamperedSnapshot(
                f"refused: snapshot {short(sid)}'s signature does not verify — its record was altered after signing; "
                "nothing was restored"
            )
        key = str(record["key"])
        whose = describe_signer(record, info)
        if not self.keyring.is_trusted(key, self.user()):
            if not trust:
                raise UntrustedSnapshot(
                    f"snapshot {short(sid)} is signed by {whose}, whom you have not trusted. Restoring it runs code "
                    "stored in it (pickles). If you trust that signer, run the same command with --trust."
                )
            self.keyring.trust(key, str(record["author"]))
            say(f"kernelhop: trusting {whose} from now on ({self.keyring.trust_path})")
        manifest_digest = str(record["manifest"])
        self.fetch([manifest_digest])
        data = bytes(self.store.get(Digest.parse(manifest_digest)))
        try:
            manifest = Manifest.from_bytes(data)
        except ManifestError as e:
            raise TamperedSnapshot(f"refused: snapshot {short(sid)}'s manifest is not valid ({e})") from None
        return Opened(sid, record, signature, info, manifest, data)

    def manifest_of(self, ref: str) -> tuple[str, Manifest]:
        """Id and manifest of a snapshot, for reading its structure only (diff): the signature is checked, trust
        is not needed because nothing is unpickled."""
        reply = self.get(ref)
        record, info = reply["record"], reply["snapshot"]
        if record_id(record) != info.get("id") or not verify(record, str(reply.get("signature"))):
            raise TamperedSnapshot(
                f"refused: snapshot {short(str(info.get('id')))}'s record or signature does not verify"
            )
        self.fetch([record["manifest"]])
        return str(info["id"]), Manifest.from_bytes(bytes(self.store.get(Digest.parse(record["manifest"]))))


def describe_signer(record: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """Whose a snapshot is, in the words a trust decision needs."""
    author = record.get("author")
    key = fingerprint(str(record.get("key")))
    if info.get("key_vouched"):
        return f"{author} (key {key}, registered with this gateway)"
    if info.get("imported"):
        return f"a key {key} that calls itself {author!r} (imported from a file: the gateway does not vouch for it)"
    return f"{author} (key {key}, no longer the key registered for {author})"


# -- diff ---------------------------------------------------------------------------------------------------------


@dataclass
class NameChange:
    name: str
    kind: str  # "added" | "changed" | "removed"
    type: str
    size_before: int | None
    size_after: int | None


def _sizes(manifest: Manifest) -> dict[str, tuple[Group, int]]:
    out: dict[str, tuple[Group, int]] = {}
    for g in manifest.groups:
        size = g.pickle.size + sum(b.size for b in g.buffers)
        for n in g.names:
            out[n] = (g, size)
    return out


def diff_manifests(a: Manifest, b: Manifest) -> list[NameChange]:
    """Names added, changed and removed from `a` to `b`; a name's size is its group's (names sharing objects are
    stored together)."""
    before, after = _sizes(a), _sizes(b)
    out: list[NameChange] = []
    for n in sorted(set(before) | set(after)):
        if n not in before:
            g, s = after[n]
            out.append(NameChange(n, "added", g.types.get(n, "?"), None, s))
        elif n not in after:
            g, s = before[n]
            out.append(NameChange(n, "removed", g.types.get(n, "?"), s, None))
        elif before[n][0].key != after[n][0].key:
            out.append(NameChange(n, "changed", after[n][0].types.get(n, "?"), before[n][1], after[n][1]))
    return out


def human(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def format_diff(a: str, b: str, changes: list[NameChange]) -> str:
    counts = {k: sum(1 for c in changes if c.kind == k) for k in ("added", "changed", "removed")}
    lines = [
        f"{short(a)} → {short(b)}: {counts['added']} added, {counts['changed']} changed, {counts['removed']} removed"
    ]
    mark = {"added": "+", "changed": "~", "removed": "-"}
    for c in changes:
        size = (
            human(c.size_after)
            if c.kind == "added"
            else human(c.size_before)
            if c.kind == "removed"
            else (f"{human(c.size_before)} → {human(c.size_after)}")
        )
        lines.append(f"  {mark[c.kind]} {c.name}  ({c.type}, {size})")
    return "\n".join(lines)


def format_list(reply: Mapping[str, Any]) -> str:
    refs: dict[str, list[str]] = {}
    for name, sid in (reply.get("refs") or {}).items():
        refs.setdefault(sid, []).append(name)
    lines: list[str] = []
    own = reply.get("snapshots") or []
    shared = reply.get("shared") or []
    if not own and not shared:
        return "no snapshots yet; save one with %snapshot save [NAME]"
    for s in own:
        names = ", ".join(refs.get(s["id"], []))
        lines.append(
            f"{short(s['id'])}  {s['created'][:19]}  {human(s['size_bytes']):>9}  "
            f"{('[' + names + '] ') if names else ''}{s['message']}"
        )
    if shared:
        lines.append("shared with you:")
        for s in shared:
            lines.append(
                f"{short(s['id'])}  {s['created'][:19]}  {human(s['size_bytes']):>9}  by {s['author']}  {s['message']}"
            )
    return "\n".join(lines)


def format_log(entries: list[Mapping[str, Any]]) -> str:
    lines = []
    for e in entries:
        parents = ", ".join(short(p) for p in e.get("parents", [])) or "none"
        lines.append(
            f"snapshot {e['id']}\n  author {e['author']}  created {e['created']}  parents {parents}\n"
            f"  {e.get('cells', 0)} cell(s) since parent; {human(e.get('size_bytes'))}"
            + (f"; notebook {e['notebook']}" if e.get("notebook") else "")
            + (f"\n  {e['message']}" if e.get("message") else "")
        )
    return "\n".join(lines)
