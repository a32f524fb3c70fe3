"""Restore groups from the store: read each stream's chunks into one buffer, then unpickle with buffers out of band."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .blobstore import BlobStore
from .chunking import read_chunked
from .manifest import Group
from .pickling import restore_context
from .reducers import DeviceMap
from .write_tracking import WriteTracker


class RestoreError(Exception):
    """A group's pickle could not be loaded here (a module missing on this host, a failing ``__setstate__``...)."""

    def __init__(self, group: Group, cause: BaseException) -> None:
        super().__init__(f"could not restore {', '.join(group.names)}: {type(cause).__name__}: {cause}")
        self.group = group


def restore_groups(
    groups: Iterable[Group],
    store: BlobStore,
    *,
    globals: dict[str, Any] | None = None,
    devices: DeviceMap | None = None,
    tracker: WriteTracker | None = None,
    streams: dict[tuple[str, ...], memoryview] | None = None,
    unrestorable: dict[tuple[str, ...], RestoreError] | None = None,
) -> dict[str, Any]:
    """The objects of ``groups`` by name.

    Functions defined in the notebook get ``globals`` as their globals: pass the namespace the result will be merged
    into (a kernel's ``user_ns``); by default it is the returned dict itself. Missing or corrupt chunks raise
    MissingBlobError or CorruptBlobError before anything is unpickled from that group; nothing here touches
    ``globals`` itself. With a ``tracker``, large out-of-band buffers are restored into memory it tracks. ``streams``
    gets each group's pickle bytes, by its names. With ``unrestorable``, a group whose pickle cannot be loaded here
    is left out and its RestoreError put there, by its names, instead of raised.

    A thread reads the groups' chunks ahead, in order, while this one unpickles the groups already read: reading and
    verifying run in C without the GIL, unpickling holds it, so the two overlap (benchmarks/RESULTS.md, "The worker's
    cold restore"). A group is unpickled only once all of its chunks are read and verified.
    """
    groups = list(groups)
    result: dict[str, Any] = {}
    with (
        restore_context(result if globals is None else globals, devices or DeviceMap()),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernelhop-read") as reader,
    ):
        reads = [reader.submit(_read_group, group, store, tracker) for group in groups]
        try:
            for group, read in zip(groups, reads, strict=True):
                stream, buffers = read.result()
                try:
                    result.update(_load(group, stream, buffers))
                except RestoreError as e:
                    if unrestorable is None:
                        raise
                    unrestorable[group.names] = e
                    continue
                if streams is not None:
                    streams[group.names] = stream
        finally:
            for read in reads:  # after a failure, groups not yet read are not read (the ``with`` waits for the rest)
                read.cancel()
    return result


def _read_group(group: Group, store: BlobStore, tracker: WriteTracker | None) -> tuple[memoryview, list[memoryview]]:
    return read_chunked(group.pickle, store), [read_chunked(b, store, tracker) for b in group.buffers]


def _load(group: Group, stream: memoryview, buffers: list[memoryview]) -> dict[str, Any]:
    try:
        objs = pickle.loads(stream, buffers=buffers)
    except Exception as e:
        raise RestoreError(group, e) from e
    if not isinstance(objs, dict) or sorted(objs) != sorted(group.names):
        raise RestoreError(group, ValueError("the pickle does not hold exactly the group's names"))
    return objs
