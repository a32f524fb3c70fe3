"""The pickler: cloudpickle, protocol 5, buffers out of band, our reducers (numpy arrays and masked arrays, large
object arrays of immutable leaves (object_arrays.py), torch tensors, matplotlib's callback registries),
notebook-bound functions.

Functions (and methods of classes) defined in the notebook are pickled by value, as cloudpickle does, with two
changes:
- their globals are not a private copy of the values they referenced at capture time but the namespace they are
  restored into (``restore_context``). That is what a notebook function is: code that reads the notebook's variables
  when called. It also keeps a function from dragging every global it mentions into its group.
- their closure cells are pickled as objects (made empty, memoized, then filled), not copied into fresh cells, so
  closures sharing a cell (a counter's ``inc`` and ``get``) still share it after restore. Filling after memoizing is
  what lets a cell hold the function that closes over it.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import pickle
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np
from cloudpickle import cloudpickle as _cp

from .object_arrays import reduce_object_array
from .reducers import (
    DeviceMap,
    StorageRef,
    TensorReducer,
    devices_for_restore,
    reduce_callback_registry,
    reduce_masked_array,
    reduce_ndarray,
    refuse_writable_memmap,
)

PROTOCOL = 5

# cloudpickle would pickle an open file as a copy of its contents (a StringIO on restore); an open file belongs to
# its process, so it is reported unpicklable like a socket or a lock.
_OPEN_FILE_TYPES = (io.FileIO, io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.TextIOWrapper)


class _NotebookGlobals:
    """Stands, in a pickle, for the namespace notebook functions are restored into."""

    __slots__ = ()

    def __reduce__(self) -> Any:
        return (_notebook_globals, ())


NOTEBOOK_GLOBALS = _NotebookGlobals()
_restore_globals: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("kernelhop_globals")


def _notebook_globals() -> dict[str, Any]:
    try:
        return _restore_globals.get()
    except LookupError:
        raise pickle.UnpicklingError(
            "this pickle holds notebook functions; unpickle it with kernelhop_snapshot (restore), which binds them "
            "to a namespace"
        ) from None


def is_notebook_function(func: types.FunctionType) -> bool:
    return func.__globals__.get("__name__") == "__main__"


def _set_notebook_function_state(func: types.FunctionType, state: Any) -> None:
    """cloudpickle's ``_function_setstate`` without globals and closure: both were given to the constructor."""
    attrs, slotstate = state
    func.__dict__.update(attrs)
    # Submodules the code uses (``os.path`` of a global ``os``): unpickling this list imported them; that was its job.
    slotstate.pop("_cloudpickle_submodules")
    for k, v in slotstate.items():
        setattr(func, k, v)


def _set_cell_contents(cell: types.CellType, state: tuple[Any]) -> None:
    cell.cell_contents = state[0]


def _reduce_cell(cell: types.CellType) -> Any:
    try:
        contents = cell.cell_contents
    except ValueError:  # an empty cell
        return (_cp._make_empty_cell, ())
    return (_cp._make_empty_cell, (), (contents,), None, None, _set_cell_contents)


class SnapshotPickler(cloudpickle.Pickler):
    def __init__(self, file: io.BytesIO, tensors: TensorReducer, buffers: list[pickle.PickleBuffer]) -> None:
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffers.append)
        self._tensors = tensors
        # torch is in sys.modules whenever a tensor exists; never import it just to look for tensors.
        torch = sys.modules.get("torch")
        self._tensor_types = (torch.Tensor, torch.nn.Parameter) if torch is not None else ()
        # Likewise numpy.ma, which ``import numpy`` leaves unloaded, and matplotlib.
        masked = sys.modules.get("numpy.ma")
        self._masked_array_type = masked.MaskedArray if masked is not None else None
        cbook = sys.modules.get("matplotlib.cbook")
        self._callback_registry_type = cbook.CallbackRegistry if cbook is not None else None

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t is np.ndarray:
            return reduce_object_array(obj) if obj.dtype == object else reduce_ndarray(obj)
        if t is np.memmap:
            # Its bytes, out of band and read-only as they were (numpy's own pickle makes a writeable memmap of no
            # file); one opened for writing is refused.
            refuse_writable_memmap(obj)
            return reduce_ndarray(obj.view(np.ndarray))
        if t is self._masked_array_type:
            return reduce_masked_array(obj)
        if t is self._callback_registry_type:
            return reduce_callback_registry(obj)
        if t in self._tensor_types:
            return self._tensors.reduce(obj)
        if t is StorageRef:
            return obj.reduce()
        if t is types.CellType:
            return _reduce_cell(obj)
        if t in _OPEN_FILE_TYPES:
            name = f"{t.__module__}.{t.__qualname__}"
            raise TypeError(f"cannot pickle '{name}' object: an open file stays with its process")
        return super().reducer_override(obj)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
        if not is_notebook_function(func):
            return super()._dynamic_function_reduce(func)
        attrs, slotstate = _cp._function_getstate(func)
        # Given to the constructor instead (see the module docstring).
        del slotstate["__globals__"], slotstate["__closure__"]
        return (
            _cp._make_function,
            (func.__code__, NOTEBOOK_GLOBALS, None, None, func.__closure__),
            (attrs, slotstate),
            None,
            None,
            _set_notebook_function_state,
        )


@dataclass
class Pickled:
    stream: memoryview
    buffers: list[pickle.PickleBuffer]
    memo: dict[int, tuple[int, Any]] | None


def dumps(obj: Any, tensors: TensorReducer, *, keep_memo: bool = False) -> Pickled:
    """Pickle ``obj``; with ``keep_memo`` also return the pickler's memo (id -> (index, object)), which holds every
    object whose identity the stream preserves, and keeps those objects alive while the caller looks at ids."""
    f = io.BytesIO()
    buffers: list[pickle.PickleBuffer] = []
    p = SnapshotPickler(f, tensors, buffers)
    p.dump(obj)
    memo = p.memo.copy() if keep_memo else None
    return Pickled(f.getbuffer(), buffers, memo)


@contextlib.contextmanager
def restore_context(globals: dict[str, Any], devices: DeviceMap) -> Iterator[None]:
    token = _restore_globals.set(globals)
    try:
        with devices_for_restore(devices):
            yield
    finally:
        _restore_globals.reset(token)

