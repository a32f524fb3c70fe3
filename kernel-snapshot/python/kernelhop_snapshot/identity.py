"""Knowing that a value's object graph did not change without pickling it: an identity print.

A value made only of exact lists, dicts, tuples and frozensets whose leaves are immutable (exact str, bytes, int,
float, complex, bool, None, range) pickles to bytes that are a function of which objects it holds, where: the
containers' lengths and the identity of every element, in order. An ``IdentityPrint`` is exactly that: every object
of the graph in a fixed walk order (breadth first, level by level), and the lengths. It holds those objects, so
while the print lives none of them can be freed and its address given to another. So if the print taken now matches
the one taken at the last capture object for object (``is``), every container is the same object holding the same
objects in the same order, every leaf is the same immutable object, and the pickle would be byte for byte the last
one: the group is reused without pickling. Anything else anywhere in the graph (a set, an array, an instance of a
class, a str subclass) makes the value untracked, and it is pickled as before.

Cost. Each level is walked with C iterators (``map``, ``chain``, ``compress``), not a Python loop per object. A
large list of leaves costs one C call: a CPython list keeps its elements as a contiguous array of pointers
(``PyListObject.ob_item``), read with one ``ctypes.string_at``; equal bytes mean the same elements, as long as a copy
made when they were verified keeps those elements alive (``LeafLists``), and whether they are all leaves is asked
(``set(map(type, ...))``) only when the pointer array changed. A probe at import checks that layout on the running
interpreter; where it does not hold, the ids are read with ``map(id, ...)`` (slower, same answer).
"""

from __future__ import annotations

import ctypes
import struct
import sys
from array import array
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, compress, repeat
from operator import is_
from typing import Any

LEAVES: frozenset[type] = frozenset({str, bytes, int, float, complex, bool, type(None), range})
_MUTABLE = frozenset({list, dict})
_CONTAINERS = frozenset({list, dict, tuple, frozenset})
_WALKABLE = LEAVES | _CONTAINERS
# A list at least this long is checked by its pointer array for being all leaves.
_LARGE = 256
# At most this many objects and levels per value (a cycle ends here); past either the value is pickled as before.
_BUDGET = 5_000_000
_DEPTH = 64


def _probe_list_layout() -> bool:
    if sys.implementation.name != "cpython" or getattr(sys, "_is_gil_enabled", lambda: True)() is False:
        return False
    items = [object(), object(), object()]
    try:
        start = ctypes.c_void_p.from_address(id(items) + _ITEMS_AT).value
        return start is not None and ctypes.string_at(start, 3 * _PTR) == struct.pack("3P", *map(id, items))
    except (ValueError, OSError):
        return False


_PTR = ctypes.sizeof(ctypes.c_void_p)
_ITEMS_AT = 3 * _PTR  # ob_refcnt, ob_type, ob_size, then ob_item
_LIST_LAYOUT = _probe_list_layout()


def pointers(items: list[Any]) -> bytes:
    """The addresses of ``items``' elements, in order, as one bytes object."""
    if not items:
        return b""
    if _LIST_LAYOUT:
        start = ctypes.c_void_p.from_address(id(items) + _ITEMS_AT).value
        return ctypes.string_at(start, len(items) * _PTR)  # type: ignore[arg-type]
    return array("Q", map(id, items)).tobytes()


class LeafLists:
    """Large lists known to hold only leaves: each one's pointer array and a copy, which keeps those leaves alive.

    ``next_capture`` keeps only the lists met since the last call, so a list that left the namespace is dropped."""

    def __init__(self) -> None:
        # id of the list -> (its pointer array when verified, a copy of it then)
        self._known: dict[int, tuple[bytes, list[Any]]] = {}
        self._seen: dict[int, tuple[bytes, list[Any]]] = {}

    def leaves_copy(self, items: list[Any], ptrs: bytes) -> list[Any] | None:
        """A copy of ``items`` (whose pointer array is ``ptrs``) if all its elements are leaves, else None. Only the
        pointers decide, never the list's id: the copy made when they were verified keeps those very objects alive."""
        known = self._seen.get(id(items)) or self._known.get(id(items))
        if known is None or known[0] != ptrs:
            # Copied first, then checked: another thread may change the list meanwhile, never the copy.
            copy = items.copy()
            if pointers(copy) != ptrs or not set(map(type, copy)) <= LEAVES:
                return None
            known = (ptrs, copy)
        self._seen[id(items)] = known
        return known[1]

    def next_capture(self) -> None:
        self._known, self._seen = self._seen, {}


@dataclass
class IdentityPrint:
    """Every object of a value's graph in walk order (``objects``, held) and the containers' lengths (``shape``)."""

    objects: list[Any]
    shape: list[Any]

    def same(self, other: IdentityPrint) -> bool:
        """Whether ``other`` names exactly these objects, in this order, with these lengths."""
        return (
            len(self.objects) == len(other.objects)
            and self.shape == other.shape
            and all(map(is_, self.objects, other.objects))
        )

    @cached_property
    def containers(self) -> dict[int, tuple[int, Any]]:
        """id -> (0, object) for each mutable container reached: what grouping.group_names reads from a memo."""
        found = list(compress(self.objects, map(_MUTABLE.__contains__, map(type, self.objects))))
        return dict(zip(map(id, found), zip(repeat(0), found)))  # noqa: B905 (repeat is endless)


def identity_print(value: Any, leaf_lists: LeafLists) -> IdentityPrint | None:
    """The value's identity print, or None where its graph holds anything but those containers and leaves."""
    try:
        return _walk(value, leaf_lists)
    except RuntimeError:  # a dict changed size under the walk (another thread): the value is pickled instead
        return None


def _walk(value: Any, leaf_lists: LeafLists) -> IdentityPrint | None:
    objects: list[Any] = [value]
    shape: list[Any] = []
    level = [value]
    types = [type(value)]
    budget = _BUDGET
    for _ in range(_DEPTH):
        if not level:
            return IdentityPrint(objects, shape)
        kinds = set(types)
        if not kinds <= _WALKABLE:
            return None
        children: list[Any] = []
        for kind in (dict, list, tuple, frozenset):
            if kind not in kinds:
                continue
            found = level if len(kinds) == 1 else list(compress(level, map(is_, types, repeat(kind))))
            lengths = list(map(len, found))
            shape += (kind.__name__, lengths)
            if kind is dict:
                keys = list(chain.from_iterable(found))
                if not set(map(type, keys)) <= LEAVES:  # tuple keys are rare: they go the pickling way
                    return None
                objects += keys
                children += chain.from_iterable(map(dict.values, found))
                continue
            if kind is list and lengths and max(lengths) >= _LARGE:
                walked = []
                for items, n in zip(found, lengths, strict=True):
                    copy = None
                    if n >= _LARGE:
                        ptrs = pointers(items)
                        copy = leaf_lists.leaves_copy(items, ptrs)
                    if copy is None:
                        walked.append(items)
                    else:  # all leaves: the pointer array stands for them, and the copy holds them
                        shape.append(ptrs)
                        objects.append(copy)
                found = walked
            children += chain.from_iterable(found)
        budget -= len(children)
        if budget < 0:
            return None
        # Every child is an object of the graph, held and compared; only containers are walked further.
        objects += children
        child_types = list(map(type, children))
        if LEAVES.issuperset(child_types):
            return IdentityPrint(objects, shape)
        level = list(compress(children, map(_CONTAINERS.__contains__, child_types)))
        types = list(compress(child_types, map(_CONTAINERS.__contains__, child_types)))
        if not _WALKABLE.issuperset(child_types):
            return None
    return None
