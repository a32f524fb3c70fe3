"""Large numpy object arrays of immutable leaves (a DataFrame's text column): pickled once, not at every capture.

numpy pickles an object array in band, element by element: a million strings cost the pickling of a million objects
and a pickler memo that big, at every capture, even when nothing changed. An object array's data is an array of
pointers to its elements. Where every element is an immutable leaf (identity.LEAVES), the pickle of the array is a
function of its layout (shape, strides) and of those pointers, as long as the objects pointed to stay alive: so a
copy of the array made when the pointers were read is kept with them. The array's pickle (numpy's own, unchanged)
is made once, kept by the array's identity, and sent out of band as a buffer; the next capture of the same array
with the same layout and the same pointer bytes reuses it, and the chunk writer's fingerprints see its chunks
unchanged. Any other object array (a dict, a list or an instance of a class in it: mutable, whatever its pointers)
is pickled by numpy as before. A restore registers what it rebuilt, so a worker's next capture reuses it too.
"""

from __future__ import annotations

import ctypes
import pickle
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from .identity import LEAVES

# Smaller arrays are pickled by numpy at each capture: cheap, and not worth a cache entry.
MIN_ELEMENTS = 4096


@dataclass(frozen=True)
class _Pickled:
    layout: tuple[tuple[int, ...], tuple[int, ...]]
    pointers: bytes
    holder: np.ndarray  # a copy made when ``pointers`` were read: keeps those elements alive
    data: Any  # the array's pickle (numpy's), bytes or the read-only buffer a restore gave


# id(array) -> its pickle; an entry is dropped by a finalizer when its array dies, before the id can be reused.
_cache: dict[int, _Pickled] = {}


def _pointers(arr: np.ndarray) -> bytes:
    return ctypes.string_at(arr.ctypes.data, arr.nbytes)


def _remember(arr: np.ndarray, entry: _Pickled) -> None:
    if id(arr) not in _cache:
        weakref.finalize(arr, _cache.pop, id(arr), None)
    _cache[id(arr)] = entry


def reduce_object_array(arr: np.ndarray) -> Any:
    """The reduce value for an exact ndarray of dtype object, or NotImplemented to leave it to numpy."""
    if arr.size < MIN_ELEMENTS or not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        return NotImplemented
    layout = (arr.shape, arr.strides)
    ptrs = _pointers(arr)
    entry = _cache.get(id(arr))
    if entry is None or entry.layout != layout or entry.pointers != ptrs:
        # Copied first, then checked and pickled: another thread may change the array meanwhile, never the copy.
        copy = arr.copy(order="K")
        if (copy.shape, copy.strides) != layout or _pointers(copy) != ptrs:
            return NotImplemented
        if not set(map(type, copy.ravel(order="K"))) <= LEAVES:
            return NotImplemented
        entry = _Pickled(layout, ptrs, copy, pickle.dumps(copy, protocol=5))
        _remember(arr, entry)
    return (_rebuild_object_array, (pickle.PickleBuffer(entry.data),))


def _rebuild_object_array(data: Any) -> np.ndarray:
    arr = pickle.loads(data)
    if (
        type(arr) is np.ndarray
        and arr.dtype == object
        and (arr.flags.c_contiguous or arr.flags.f_contiguous)
        and set(map(type, arr.ravel(order="K"))) <= LEAVES
    ):
        view = memoryview(data)
        kept = view if view.readonly else bytes(view)  # the cached pickle must never change
        _remember(arr, _Pickled((arr.shape, arr.strides), _pointers(arr), arr.copy(order="K"), kept))
    return arr
