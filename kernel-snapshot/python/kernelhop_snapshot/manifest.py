"""The snapshot manifest (format version 1, docs/FORMAT.md): parse, validate, encode.

The encoding is canonical (keys sorted, no spaces, UTF-8 without escapes), so equal manifests have equal bytes and
therefore equal digests, in Python and in the TypeScript side alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .digest import Digest

KIND = "kernelhop.snapshot"
VERSION = 1


class ManifestError(ValueError):
    """A manifest that does not follow format version 1."""


@dataclass(frozen=True, slots=True)
class BlobRef:
    """One byte stream (a pickle or an out-of-band buffer) as the ordered chunks that make it up."""

    size: int
    chunks: tuple[Digest, ...]

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "chunks": [str(c) for c in self.chunks]}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> BlobRef:
        if not isinstance(obj, dict) or set(obj) != {"size", "chunks"}:
            raise ManifestError(f"{where} must be an object with exactly 'size' and 'chunks', got {obj!r:.200}")
        size, chunks = obj["size"], obj["chunks"]
        if type(size) is not int or size < 0:
            raise ManifestError(f"{where}.size must be a non-negative integer, got {size!r}")
        if not isinstance(chunks, list):
            raise ManifestError(f"{where}.chunks must be a list of digests")
        try:
            parsed = tuple(Digest.parse(c) for c in chunks)
        except ValueError as e:
            raise ManifestError(f"{where}.chunks: {e}") from None
        total = sum(c.size for c in parsed)
        if total != size:
            raise ManifestError(f"{where}: chunks add up to {total} bytes but size says {size}")
        return cls(size, parsed)


@dataclass(frozen=True, slots=True)
class Group:
    """Variables captured in one pickle stream because they reach shared objects."""

    names: tuple[str, ...]
    types: dict[str, str] = field(compare=False, hash=False)
    pickle: BlobRef
    buffers: tuple[BlobRef, ...]

    @property
    def key(self) -> tuple[tuple[str, ...], BlobRef, tuple[BlobRef, ...]]:
        """What decides whether two groups are the same (the contract ignores ``types``)."""
        return (self.names, self.pickle, self.buffers)

    def blob_digests(self) -> set[Digest]:
        out = set(self.pickle.chunks)
        for b in self.buffers:
            out.update(b.chunks)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "types": dict(self.types),
            "pickle": self.pickle.to_json(),
            "buffers": [b.to_json() for b in self.buffers],
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Group:
        if not isinstance(obj, dict) or set(obj) != {"names", "types", "pickle", "buffers"}:
            raise ManifestError(f"{where} must have exactly 'names', 'types', 'pickle', 'buffers'")
        names, types = obj["names"], obj["types"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ManifestError(f"{where}.names must be a non-empty list of strings")
        if len(set(names)) != len(names):
            raise ManifestError(f"{where}.names repeats a name: {names}")
        if not isinstance(types, dict) or not all(isinstance(v, str) for v in types.values()):
            raise ManifestError(f"{where}.types must map names to type strings")
        if set(types) != set(names):
            raise ManifestError(f"{where}.types must name exactly the group's names")
        if not isinstance(obj["buffers"], list):
            raise ManifestError(f"{where}.buffers must be a list")
        return cls(
            names=tuple(names),
            types=dict(types),
            pickle=BlobRef.from_json(obj["pickle"], f"{where}.pickle"),
            buffers=tuple(BlobRef.from_json(b, f"{where}.buffers[{i}]") for i, b in enumerate(obj["buffers"])),
        )


@dataclass(frozen=True, slots=True)
class FilesRef:
    """The working directory a hop carries (tree.py): its tree's root blob, and the sys.path entries inside it
    (POSIX paths relative to its root, "." for the root itself), so the notebook's own modules import there."""

    tree: Digest
    sys_path: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"tree": str(self.tree), "sys_path": list(self.sys_path)}

    @classmethod
    def from_json(cls, obj: Any) -> FilesRef:
        if not isinstance(obj, dict) or set(obj) != {"tree", "sys_path"}:
            raise ManifestError("manifest files must be an object with exactly 'tree' and 'sys_path'")
        try:
            tree = Digest.parse(obj["tree"])
        except (TypeError, ValueError) as e:
            raise ManifestError(f"files.tree: {e}") from None
        paths = obj["sys_path"]
        if not isinstance(paths, list) or not all(isinstance(p, str) and _relative(p) for p in paths):
            raise ManifestError("files.sys_path must list relative paths inside the tree (no '..', not absolute)")
        return cls(tree, tuple(paths))


def _relative(path: str) -> bool:
    return bool(path) and not path.startswith("/") and ".." not in path.split("/")


@dataclass(frozen=True, slots=True)
class Manifest:
    groups: tuple[Group, ...]
    unpicklable: dict[str, dict[str, str]]
    meta: dict[str, Any]
    # The working directory the hop carries; absent (None) where files do not travel, as in saved snapshots.
    files: FilesRef | None = None

    def names(self) -> list[str]:
        """Names carried in groups (not the unpicklable ones)."""
        return [n for g in self.groups for n in g.names]

    def group_of(self, name: str) -> Group:
        for g in self.groups:
            if name in g.names:
                return g
        raise KeyError(f"no group in this manifest holds {name!r}")

    def blob_digests(self, groups: Iterable[Group] | None = None) -> set[Digest]:
        """Every chunk the manifest names, or only ``groups``' chunks (never the manifest blob itself)."""
        out: set[Digest] = set()
        for g in self.groups if groups is None else groups:
            out |= g.blob_digests()
        return out

    def to_json(self) -> dict[str, Any]:
        out = {
            "kind": KIND,
            "version": VERSION,
            "groups": [g.to_json() for g in self.groups],
            "unpicklable": {k: dict(v) for k, v in self.unpicklable.items()},
            "meta": self.meta,
        }
        if self.files is not None:
            out["files"] = self.files.to_json()
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, obj: Any) -> Manifest:
        if not isinstance(obj, dict):
            raise ManifestError("a manifest is a JSON object")
        expected = {"kind", "version", "groups", "unpicklable", "meta"}
        if set(obj) - {"files"} != expected:
            raise ManifestError(f"manifest keys must be {sorted(expected)} (and 'files' if any), got {sorted(obj)}")
        if obj["kind"] != KIND:
            raise ManifestError(f"manifest kind must be {KIND!r}, got {obj['kind']!r}")
        if obj["version"] != VERSION or type(obj["version"]) is not int:
            raise ManifestError(f"unsupported manifest version {obj['version']!r}; this code reads version {VERSION}")
        if not isinstance(obj["groups"], list):
            raise ManifestError("manifest groups must be a list")
        groups = tuple(Group.from_json(g, f"groups[{i}]") for i, g in enumerate(obj["groups"]))
        seen: set[str] = set()
        for g in groups:
            dup = seen.intersection(g.names)
            if dup:
                raise ManifestError(f"names {sorted(dup)} appear in more than one group")
            seen.update(g.names)
        unpicklable = obj["unpicklable"]
        if not isinstance(unpicklable, dict):
            raise ManifestError("manifest unpicklable must be an object")
        for name, entry in unpicklable.items():
            if (
                not isinstance(entry, dict)
                or set(entry) != {"type", "reason"}
                or not all(isinstance(v, str) for v in entry.values())
            ):
                raise ManifestError(f"unpicklable[{name!r}] must be {{'type': str, 'reason': str}}")
            if name in seen:
                raise ManifestError(f"{name!r} is both in a group and unpicklable")
        if not isinstance(obj["meta"], dict):
            raise ManifestError("manifest meta must be an object")
        files = FilesRef.from_json(obj["files"]) if "files" in obj else None
        return cls(groups, {k: dict(v) for k, v in unpicklable.items()}, obj["meta"], files)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Manifest:
        try:
            obj = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"manifest is not UTF-8 JSON: {e}") from None
        except RecursionError:
            raise ManifestError("manifest nests deeper than any manifest does") from None
        return cls.from_json(obj)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
