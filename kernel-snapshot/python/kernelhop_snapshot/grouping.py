"""Groups of co-variables: names whose values reach a shared object are pickled together.

Why this is sound. Pickle keeps identity only inside one stream, through its memo: an object reached twice in one
stream is written once and read back as one object. So two names must share a stream exactly when pickling them
would memoize a common object whose identity matters. We pickle each name alone first and read the pickler's memo,
which lists precisely the objects that stream would share (no guess about what pickle traverses: it is what pickle
traversed, including what ``__reduce__`` and ``__getstate__`` produced). Names whose memos have a common object are
joined with union-find, and each resulting group is pickled as one stream.

Only objects whose identity can be observed count. Left out, because they come back as the same object from any
number of streams or because identity cannot be told apart from equality:
- immutable values (str, bytes, numbers, tuples and frozensets (their mutable members are memoized themselves),
  code objects, numpy dtypes and scalars, torch dtypes and devices, enum members);
- what pickle saves by reference: modules, importable classes and functions, builtins;
- classes defined in the notebook, which cloudpickle tracks by an id so every stream restores one class object, and
  the definition they carry (methods, their cells and defaults, class attributes): each stream that reaches the
  class carries that definition, so all instances of one notebook class do not have to travel in one group.
  The cost of that rule: a name bound to a class attribute (``x = Model.registry``) is not kept identical to it.

What the memo sees depends on the reducers: ours pickle a numpy view through its root array and a torch tensor
through a per-capture storage reference, so views of one base and tensors on one storage share a memoized object
and therefore a group.
"""

from __future__ import annotations

import enum
import operator
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from cloudpickle import cloudpickle as _cp

from .pickling import NOTEBOOK_GLOBALS

_IMMUTABLE = (
    str, bytes, int, float, complex, bool, type(None), tuple, frozenset, range, slice,
    types.CodeType, type(Ellipsis), type(NotImplemented), np.dtype, np.generic, enum.Enum,
)  # fmt: skip
_BY_REFERENCE = (
    type, types.ModuleType, types.BuiltinFunctionType, types.MethodWrapperType,
    types.WrapperDescriptorType, types.MethodDescriptorType, types.ClassMethodDescriptorType,
)  # fmt: skip


_is_class = type.__instancecheck__.__get__(type)  # isinstance(obj, type), as a callable for filter()
_second = operator.itemgetter(1)


class _UnionFind:
    def __init__(self, items: Iterable[str]) -> None:
        self.parent = {x: x for x in items}

    def find(self, x: str) -> str:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _identity_matters(obj: Any, torch_value_types: tuple[type, ...]) -> bool:
    if obj is NOTEBOOK_GLOBALS or isinstance(obj, _IMMUTABLE) or isinstance(obj, _BY_REFERENCE):
        return False
    if torch_value_types and isinstance(obj, torch_value_types):
        return False
    if isinstance(obj, types.FunctionType) and _cp._should_pickle_by_reference(obj):
        return False
    return True


def _class_definition_ids(cls: type) -> set[int]:
    """Ids of the objects a notebook class's pickled definition carries (see the module docstring)."""
    owned: set[int] = set()
    stack = list(vars(cls).values())
    while stack:
        o = stack.pop()
        if id(o) in owned:
            continue
        owned.add(id(o))
        if isinstance(o, (staticmethod, classmethod)):
            stack.append(o.__func__)
        elif isinstance(o, property):
            stack.extend((o.fget, o.fset, o.fdel))
        elif isinstance(o, types.FunctionType):
            stack.extend(o.__closure__ or ())
            stack.extend(o.__defaults__ or ())
            stack.extend((o.__kwdefaults__ or {}).values())
            stack.extend((o.__dict__, o.__annotations__))
        elif isinstance(o, types.CellType):
            try:
                stack.append(o.cell_contents)
            except ValueError:  # an empty cell
                pass
        elif type(o) in (list, tuple, set, frozenset):
            stack.extend(o)
        elif type(o) is dict:
            stack.extend(o.keys())
            stack.extend(o.values())
    return owned


def group_names(memos: Mapping[str, Mapping[int, tuple[int, Any]]]) -> list[list[str]]:
    """Partition the names by shared objects; ``memos`` maps each name to the memo of its own pickle."""
    torch = sys.modules.get("torch")
    torch_value_types: tuple[type, ...] = (
        (torch.dtype, torch.device, torch.layout, torch.memory_format, torch.Size) if torch is not None else ()
    )
    uf = _UnionFind(memos)
    # Set operations on the memos' key views run in C: a Python loop over every memoized object (tens of thousands
    # for a list of small dicts) cost more than the pickling itself.
    seen: set[int] = set()
    shared_ids: set[int] = set()
    for memo in memos.values():
        shared_ids |= memo.keys() & seen
        seen |= memo.keys()
    shared: dict[int, tuple[Any, list[str]]] = {}
    if shared_ids:
        for name, memo in memos.items():
            for oid in memo.keys() & shared_ids:
                shared.setdefault(oid, (memo[oid][1], []))[1].append(name)
    if shared:
        definition_ids: set[int] = set()
        for memo in memos.values():
            # The classes among the memoized objects, found in C (a Python loop cost ~1 µs per object).
            for obj in filter(_is_class, map(_second, memo.values())):
                if not _cp._should_pickle_by_reference(obj):
                    definition_ids |= _class_definition_ids(obj)
        for oid, (obj, names) in shared.items():
            if oid not in definition_ids and _identity_matters(obj, torch_value_types):
                for other in names[1:]:
                    uf.union(names[0], other)
    groups: dict[str, list[str]] = {}
    for name in memos:
        groups.setdefault(uf.find(name), []).append(name)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])
