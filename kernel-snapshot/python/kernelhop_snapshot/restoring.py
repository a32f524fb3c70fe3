"""Restore groups from the store: read each stream's chunks into one buffer, then unpickle with buffers out of band."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
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
) -> dict[str, Any]:
    """The objects of ``groups`` by name.

    Functions defined in the notebook get ``globals`` as their globals: pass the namespace the result will be merged
    into (a kernel's ``user_ns``); by default it is the returned dict itself. Missing or corrupt chunks raise
    MissingBlobError or CorruptBlobError before anything is unpickled from that group; nothing here touches
    ``globals`` itself. With a ``tracker``, large out-of-band buffers are restored into memory it tracks. ``streams``
    gets each group's pickle bytes, by its names.
    """
    result: dict[str, Any] = {}
    with restore_context(result if globals is None else globals, devices or DeviceMap()):
        for group in groups:
            stream = read_chunked(group.pickle, store)
            buffers = [read_chunked(b, store, tracker) for b in group.buffers]
            try:
                objs = pickle.loads(stream, buffers=buffers)
            except Exception as e:
                raise RestoreError(group, e) from e
            if not isinstance(objs, dict) or sorted(objs) != sorted(group.names):
                raise RestoreError(group, ValueError("the pickle does not hold exactly the group's names"))
            result.update(objs)
            if streams is not None:
                streams[group.names] = stream
    return result
