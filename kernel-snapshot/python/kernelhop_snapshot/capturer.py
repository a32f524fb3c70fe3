"""Capture a namespace into the store as chunks plus a manifest; the Capturer that does it, warm, hop after hop.

Incremental rule (why skipping is safe). A name whose value is made only of exact lists, dicts, tuples and
frozensets of immutable leaves gets an identity print (identity.py): every object of its graph, held, in a fixed
order, and the containers' lengths. When a group's names all have prints that match, object for object, the prints
taken when that group was last captured or restored, the group's pickle cannot differ: it is reused without pickling
or hashing (its chunks are put again from the bytes kept, where this capture's store lacks them). Every other value
is pickled again: its bytes may have changed in place. That costs little, because big buffers travel out of band
(no copy), a large object array of leaves reuses its pickle while its pointers are unchanged (object_arrays.py), and
chunks already in the store are hashed but not written again; the digests then show which groups really changed.
Grouping still sees every shared mutable object: a print lists its containers, which stand in for a pickler's memo.

Each out-of-band buffer is checked against its chunks at the last capture or restore (ChunkWriter.add_buffer's
``hint``): chunks whose bytes still have the same fingerprint (or, just after a restore, the same digest) are
unchanged, and when all are, the chunk list is reused without running FastCDC. Content decides, so the manifest is
the one a fresh capture would make (docs/ARCHITECTURE.md, "Knowing what did not change").
"""

from __future__ import annotations

import datetime
import functools
import gc
import platform
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .blobstore import BlobStore
from .chunking import Chunked, ChunkWriter
from .digest import Digest, digest_of
from .grouping import group_names
from .identity import IdentityPrint, LeafLists, identity_print
from .manifest import BlobRef, FilesRef, Group, Manifest
from .pickling import Pickled, dumps
from .placeholders import Placeholder, RemoteOnly
from .reducers import DeviceMap, TensorReducer
from .restoring import RestoreError, restore_groups
from .write_tracking import WriteTracker

_F = TypeVar("_F", bound=Callable[..., Any])


def _collector_paused(method: _F) -> _F:
    """Run ``method`` with Python's cyclic garbage collector off. A capture allocates tens of thousands of short-lived
    objects (pickler memos); with the collector on they set off full collections over the whole user state, ~0.12 s
    each on a 1 GiB state, one hop in three. Off, they are freed by reference counting before a collection is due."""

    @functools.wraps(method)
    def paused(*args: Any, **kwargs: Any) -> Any:
        if not gc.isenabled():
            return method(*args, **kwargs)
        gc.disable()
        try:
            return method(*args, **kwargs)
        finally:
            gc.enable()

    return paused  # type: ignore[return-value]


def type_name(value: Any) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}"


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


@dataclass
class _Tracked:
    """A group of tracked names as last captured or restored: its names' identity prints, and its pickle's bytes
    (None after a restore from a store that keeps them)."""

    group: Group
    prints: dict[str, IdentityPrint]
    stream: memoryview | None


@dataclass
class Capture:
    manifest: Manifest
    digest: Digest
    new_blobs: list[Digest]
    unpicklable: dict[str, str] = field(default_factory=dict)
    # Names of groups out of ``reach`` whose buffers kept their chunks from the last capture, unread (may be stale).
    unverified: frozenset[str] = frozenset()


class Capturer:
    """Captures and restores namespaces through one store; one per kernel or worker, kept warm between hops."""

    def __init__(self, store: BlobStore, *, devices: DeviceMap | None = None, track_writes: bool = False) -> None:
        """``track_writes``: restore large buffers into memory whose written pages the next capture can see
        (write_tracking.py); for workers, whose whole state is restored."""
        self.store = store
        self.devices = devices or DeviceMap()
        self.tracker = WriteTracker() if track_writes else None
        # group names -> that group of tracked names at the last capture or restore (the module docstring)
        self._tracked: dict[tuple[str, ...], _Tracked] = {}
        self._leaf_lists = LeafLists()
        # (group names, buffer index) -> that buffer at the last capture or restore: a hint for ChunkWriter.add_buffer
        self._buffer_hints: dict[tuple[tuple[str, ...], int], Chunked] = {}
        # name -> (the RemoteOnly placeholder a restore left under that name, the group it stands for)
        self._remote: dict[str, tuple[RemoteOnly, Group]] = {}
        # group names -> that group at the last capture: what a group out of reach may keep (capture's ``reach``)
        self._groups: dict[tuple[str, ...], Group] = {}

    @_collector_paused
    def capture(
        self,
        namespace: Mapping[str, Any],
        *,
        parent: Digest | None = None,
        meta: dict[str, Any] | Callable[[Mapping[str, dict[str, str]]], dict[str, Any]] | None = None,
        keep: Iterable[Group] = (),
        reach: Collection[str] | None = None,
        files: FilesRef | None = None,
    ) -> Capture:
        """Capture ``namespace``. ``meta`` adds keys to the manifest's meta; a callable gets the unpicklable names'
        entries (name -> {"type", "reason"}) once they are known and returns them, so what depends on them (the
        kernel's recipes, kernelhop/client/recompute.py) goes into the one manifest written. ``keep``: groups that go
        into the manifest as they are, for names ``namespace`` lacks (a worker's groups it never restored: lazy
        restore); their chunks need not be in this store.

        ``reach``: the names whoever reads this capture will expose (a hop's worker hides every group out of it, see
        docs/ARCHITECTURE.md, "Lazy restore"). Every name is still pickled, so groups follow shared references
        exactly, but a group without a reached name whose pickle equals its last capture's keeps that capture's
        buffer chunks without reading its buffers: its bytes may have changed in place since, so such a group
        (``Capture.unverified``) is only for a reader that never exposes it. Its chunks may be missing from this
        store; capture again without ``reach`` to get them. ``files``: the working directory the manifest names
        (tree.py); its blobs are the caller's to store."""
        tensors = TensorReducer(self.devices)
        writer = ChunkWriter(self.store, self.tracker)
        unpicklable: dict[str, dict[str, str]] = {}
        groups: list[Group] = []
        pickled: dict[str, Pickled] = {}
        prints: dict[str, IdentityPrint] = {}
        tracked: dict[tuple[str, ...], _Tracked] = {}
        last_prints = {n: p for t in self._tracked.values() for n, p in t.prints.items()}
        hints: dict[tuple[tuple[str, ...], int], Chunked] = {}
        remote_held: dict[tuple[str, ...], list[str]] = {}
        reached = None if reach is None else frozenset(reach)
        unverified: set[str] = set()

        for name in sorted(namespace):
            value = namespace[name]
            kept = self._remote.get(name)
            if kept is not None and kept[0] is value:
                remote_held.setdefault(kept[1].names, []).append(name)
                continue
            if isinstance(value, Placeholder):
                unpicklable[name] = value.entry
                continue
            now = identity_print(value, self._leaf_lists)
            if now is not None:
                last = last_prints.get(name)
                prints[name] = last if last is not None and last.same(now) else now
                continue
            try:
                pickled[name] = dumps({name: value}, tensors, keep_memo=True)
            except Exception as e:
                unpicklable[name] = {"type": type_name(value), "reason": _reason(e)}
        self._leaf_lists.next_capture()

        memos = {n: p.memo for n, p in pickled.items()} | {n: p.containers for n, p in prints.items()}
        for names in group_names(memos):  # type: ignore[arg-type]
            key = tuple(names)
            last_group = self._tracked.get(key)
            if (
                last_group is not None
                and all(prints.get(n) is last_group.prints[n] for n in names)
                and self._put_kept(last_group, writer)
            ):
                groups.append(last_group.group)
                tracked[key] = last_group
                continue
            parts = self._pickle_group(names, namespace, pickled, tensors, unpicklable)
            for part_names, p in parts:
                group, buffers, unread = self._store_group(part_names, namespace, p, writer, reached)
                if unread:
                    unverified.update(group.names)
                groups.append(group)
                hints.update(((group.names, i), b) for i, b in enumerate(buffers))
                if not p.buffers and all(n in prints for n in part_names):
                    tracked[group.names] = _Tracked(group, {n: prints[n] for n in part_names}, p.stream)
        pickled.clear()  # drop the memos (they keep objects alive)
        kept = list(keep)
        groups.extend(kept)
        # A kept group's objects may come back (a worker's hidden groups): keep what its buffers were.
        kept_names = {g.names for g in kept}
        hints.update((k, v) for k, v in self._buffer_hints.items() if k[0] in kept_names)
        self._remote = self._keep_remote(remote_held, groups, unpicklable)

        self._tracked = tracked
        self._buffer_hints = hints
        self._groups = {g.names: g for g in groups}
        manifest = Manifest(
            groups=tuple(sorted(groups, key=lambda g: g.names)),
            unpicklable=unpicklable,
            meta={
                "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "python": platform.python_version(),
                "parent": None if parent is None else str(parent),
                **((meta(unpicklable) if callable(meta) else meta) or {}),
            },
            files=files,
        )
        # Write order: every chunk first, the manifest last, so a manifest in the store has all its chunks.
        new_blobs = writer.finish()
        data = manifest.to_bytes()
        digest = digest_of(data)
        if not self.store.has(digest):
            self.store.put(digest, data)
            new_blobs.append(digest)
        return Capture(
            manifest=manifest,
            digest=digest,
            new_blobs=new_blobs,
            unpicklable={n: e["reason"] for n, e in unpicklable.items()},
            unverified=frozenset(unverified),
        )

    def _put_kept(self, last: _Tracked, writer: ChunkWriter) -> bool:
        """Whether this store has, or now gets from the bytes kept, every chunk of a reused group."""
        if not self.store.missing(last.group.pickle.chunks):
            return True
        if last.stream is None:
            return False
        writer.put_known(last.group.pickle, last.stream)
        return True

    @staticmethod
    def _pickle_group(
        names: list[str],
        namespace: Mapping[str, Any],
        pickled: dict[str, Pickled],
        tensors: TensorReducer,
        unpicklable: dict[str, dict[str, str]],
    ) -> list[tuple[list[str], Pickled]]:
        """The group's pickle; where it fails, each name's own (they lose their shared references to each other),
        and a name that fails alone is unpicklable."""
        if len(names) > 1 or names[0] not in pickled:
            try:
                return [(names, dumps({n: namespace[n] for n in names}, tensors))]
            except Exception as e:
                if len(names) == 1:
                    unpicklable[names[0]] = {"type": type_name(namespace[names[0]]), "reason": _reason(e)}
                    return []
        parts = []
        for n in names:
            try:
                parts.append(([n], pickled[n] if n in pickled else dumps({n: namespace[n]}, tensors)))
            except Exception as e:
                unpicklable[n] = {"type": type_name(namespace[n]), "reason": _reason(e)}
        return parts

    def _keep_remote(
        self, held: dict[tuple[str, ...], list[str]], groups: list[Group], unpicklable: dict[str, dict[str, str]]
    ) -> dict[str, tuple[RemoteOnly, Group]]:
        """Groups whose names all still hold their RemoteOnly placeholders go out as they came, so the other side
        gets the real objects back. A group some of whose names were rebound or deleted here cannot (its pickle
        would bring them back): its remaining names become unpicklable entries saying so."""
        kept: dict[str, tuple[RemoteOnly, Group]] = {}
        for names, present in held.items():
            group = self._remote[present[0]][1]
            if len(present) == len(names):
                groups.append(group)
                kept.update((n, self._remote[n]) for n in names)
                continue
            gone = ", ".join(n for n in names if n not in present)
            for n in present:
                unpicklable[n] = {
                    "type": group.types[n],
                    "reason": f"it could not be rebuilt here and was kept to be sent back together with {gone}, "
                    "which has been rebound or deleted here since, so it can no longer be sent back as it was",
                }
        return kept

    def _unread_buffers(self, key: tuple[str, ...], stream: BlobRef, p: Pickled) -> list[Chunked] | None:
        """The buffers of the last capture of this group, if its pickle is unchanged (so are the buffers' shapes)."""
        last = self._groups.get(key)
        if last is None or last.pickle != stream or len(last.buffers) != len(p.buffers):
            return None
        hints = [self._buffer_hints.get((key, i)) for i in range(len(p.buffers))]
        if any(h is None or h.ref.size != b.raw().nbytes for h, b in zip(hints, p.buffers, strict=True)):
            return None
        # The fingerprints stay those of the bytes last read: the next capture that reads them compares with those.
        return hints  # type: ignore[return-value]

    def remote_groups(self) -> list[Group]:
        """The groups held here as RemoteOnly placeholders, which the next capture sends back unchanged."""
        return list({g.names: g for _, g in self._remote.values()}.values())

    def _store_group(
        self,
        names: list[str],
        namespace: Mapping[str, Any],
        p: Pickled,
        writer: ChunkWriter,
        reach: frozenset[str] | None,
    ) -> tuple[Group, list[Chunked], bool]:
        """The group, its buffers, and whether those are the last capture's, unread (``capture``'s ``reach``)."""
        stream_ref = writer.add(p.stream)
        key = tuple(names)
        buffers = self._unread_buffers(key, stream_ref, p) if reach is not None and reach.isdisjoint(names) else None
        unread = bool(buffers)
        if buffers is None:
            buffers = [writer.add_buffer(b.raw(), self._buffer_hints.get((key, i))) for i, b in enumerate(p.buffers)]
        group = Group(
            names=tuple(names),
            types={n: type_name(namespace[n]) for n in names},
            pickle=stream_ref,
            buffers=tuple(b.ref for b in buffers),
        )
        return group, buffers, unread

    @_collector_paused
    def restore(
        self,
        manifest: Manifest,
        *,
        groups: Iterable[Group] | None = None,
        globals: dict[str, Any] | None = None,
        keep_unrestorable: str | None = None,
    ) -> dict[str, Any]:
        """The objects of ``groups`` (default: all of the manifest's), by name; see ``restoring.restore_groups``.

        With the default ``groups`` the result also holds a Placeholder for each unpicklable name. With
        ``keep_unrestorable`` (where the snapshot was made: "runtime" or "kernel") a group that fails to unpickle
        here (RestoreError: a module or class this process lacks, a failing ``__setstate__``) gives a RemoteOnly
        placeholder per name instead of failing the restore, and later captures send that group back as it was
        while the names hold them.
        """
        selected = manifest.groups if groups is None else tuple(groups)
        if keep_unrestorable is None:
            result = self._restore(selected, globals, None)
        else:
            failed: dict[tuple[str, ...], RestoreError] = {}
            result = self._restore(selected, globals, failed)
            for e in failed.values():
                reason = f"{type(e.__cause__).__name__}: {e.__cause__}"
                for name in e.group.names:
                    placeholder = RemoteOnly(name, e.group.types[name], reason, keep_unrestorable)
                    result[name] = placeholder
                    self._remote[name] = (placeholder, e.group)
                self._tracked.pop(e.group.names, None)
        if groups is None:
            for name, entry in manifest.unpicklable.items():
                result[name] = Placeholder(name, entry["type"], entry["reason"])
        return result

    def _restore(
        self,
        selected: tuple[Group, ...],
        globals: dict[str, Any] | None,
        failed: dict[tuple[str, ...], RestoreError] | None,
    ) -> dict[str, Any]:
        streams: dict[tuple[str, ...], memoryview] = {}
        result = restore_groups(
            selected,
            self.store,
            globals=globals,
            devices=self.devices,
            tracker=self.tracker,
            streams=streams,
            unrestorable=failed,
        )
        for group in selected:
            if failed and group.names in failed:
                continue
            self._buffer_hints.update(((group.names, i), Chunked(ref)) for i, ref in enumerate(group.buffers))
            for name in group.names:
                self._remote.pop(name, None)
            prints = {} if group.buffers else {n: identity_print(result[n], self._leaf_lists) for n in group.names}
            if prints and all(p is not None for p in prints.values()):
                self._tracked[group.names] = _Tracked(group, prints, streams[group.names])  # type: ignore[arg-type]
            else:
                self._tracked.pop(group.names, None)
        return result


def capture(
    namespace: Mapping[str, Any], store: BlobStore, *, devices: DeviceMap | None = None, **kwargs: Any
) -> Capture:
    """One capture with a fresh Capturer (nothing remembered from earlier hops)."""
    return Capturer(store, devices=devices).capture(namespace, **kwargs)


def restore(manifest: Manifest, store: BlobStore, *, devices: DeviceMap | None = None, **kwargs: Any) -> dict[str, Any]:
    """One restore with a fresh Capturer; see Capturer.restore."""
    return Capturer(store, devices=devices).restore(manifest, **kwargs)
