"""Reducers for numpy arrays and torch tensors that keep their bytes out of band and their sharing intact.

numpy's own reducer copies a view's elements, so two views of one base come back as two independent arrays; ours
pickles a view as (its root array, byte offset, shape, strides), so the root is one object in the pickle memo and
views of it are views again after restore. torch's own pickling copies tensor bytes in band; ours sends the storage
bytes out of band as a ``PickleBuffer`` through a per-capture storage reference, so tensors sharing a storage share it
again after restore.

Devices: a tensor records the device its storage was on. On restore the storage goes back to that device when the
``DeviceMap`` in effect says it is available, else it stays on the CPU (a CUDA tensor comes home as a CPU tensor).

A matplotlib ``CallbackRegistry`` keeps the links between the objects of a figure (``reduce_callback_registry``).

torch is never imported here unless a tensor is being pickled or unpickled (``sys.modules`` is consulted instead).
"""

from __future__ import annotations

import contextlib
import contextvars
import copyreg
import pickle
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

# --- numpy -------------------------------------------------------------------------------------------------------


def reduce_ndarray(arr: np.ndarray) -> Any:
    """Reduce an exact ``np.ndarray``; ``NotImplemented`` leaves it to numpy (object dtype, odd layouts)."""
    if arr.dtype.hasobject:
        return NotImplemented
    root = arr
    while type(root.base) is np.ndarray:
        root = root.base
    if isinstance(root.base, np.memmap):
        refuse_writable_memmap(root.base)
    torch = sys.modules.get("torch")
    if torch is not None and type(root.base) in (torch.Tensor, torch.nn.Parameter):
        return _reduce_tensor_view(arr, root.base)
    if root is arr or root.dtype.hasobject:
        return _reduce_owner(arr)
    if not (root.flags.c_contiguous or root.flags.f_contiguous):
        return NotImplemented
    offset = arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return (_rebuild_view, (root, offset, arr.shape, arr.strides, arr.dtype, arr.flags.writeable))


def _reduce_tensor_view(arr: np.ndarray, tensor: Any) -> Any:
    """An array that views a tensor's memory (``t.numpy()``) goes as a view of that tensor, so the two still share
    their memory after a restore (the tensor's storage is one object per capture)."""
    offset = arr.__array_interface__["data"][0] - tensor.untyped_storage().data_ptr()
    return (_rebuild_tensor_view, (tensor, offset, arr.shape, arr.strides, arr.dtype, arr.flags.writeable))


def _rebuild_tensor_view(
    tensor: Any, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: np.dtype, writeable: bool
) -> np.ndarray:
    import torch

    storage = tensor.untyped_storage()
    memory = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),), (1,)).numpy()
    view = np.ndarray(shape, dtype, buffer=memory, offset=offset, strides=strides)
    if not writeable:
        view.flags.writeable = False
    return view


def refuse_writable_memmap(arr: np.memmap) -> None:
    """A memmap opened for writing is a live handle: its writes go to its file. A copy of its bytes that came home
    would silently stop writing there, so it stays with its process, as an open file does. A read-only or
    copy-on-write one, whose writes never reach the file, travels as a copy of its bytes."""
    if arr.mode in ("r+", "w+"):
        raise TypeError(
            f"cannot pickle a numpy.memmap of {arr.filename} opened for writing ({arr.mode!r}): its writes go to "
            "that file, so it stays with its process"
        )


def _reduce_owner(arr: np.ndarray) -> Any:
    if arr.flags.c_contiguous:
        order = "C"
    elif arr.flags.f_contiguous:
        order = "F"
    else:
        return NotImplemented
    if arr.dtype.itemsize == 0:
        return NotImplemented
    # The buffer is exported as raw bytes (a uint8 view in memory order), because the buffer protocol refuses some
    # dtypes (datetime64, timedelta64). A read-only array gives a read-only PickleBuffer; pickle then hands back a
    # read-only view, so the restored array is read-only too.
    raw = arr.ravel(order="K").view(np.uint8)
    return (_rebuild_array, (pickle.PickleBuffer(raw), arr.dtype, arr.shape, order))


def _rebuild_array(buf: Any, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    data = memoryview(buf)
    if data.nbytes == 0:
        # An empty buffer arrives as read-only bytes and numpy gives an array on it other strides: make it anew.
        arr = np.empty(shape, dtype, order=order)
        arr.flags.writeable = not data.readonly
        return arr
    return np.ndarray(shape, dtype, buffer=buf, order=order)


def _rebuild_view(
    root: np.ndarray, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: np.dtype, writeable: bool
) -> np.ndarray:
    # Through a byte view of the root: the buffer protocol refuses some dtypes (datetime64) as they are.
    view = np.ndarray(shape, dtype, buffer=root.ravel(order="K").view(np.uint8), offset=offset, strides=strides)
    if not writeable:
        view.flags.writeable = False
    return view


def reduce_masked_array(arr: np.ma.MaskedArray) -> Any:
    """Reduce an exact ``np.ma.MaskedArray`` as its data (an ndarray view, through ``reduce_ndarray``: out of band and
    still sharing memory with the array it masks) plus its attributes. numpy's own reducer copies the data in band
    and drops the hard mask and the mask's sharing."""
    return (_rebuild_masked_array, (arr.view(np.ndarray), vars(arr).copy()))


def _rebuild_masked_array(data: np.ndarray, attributes: dict[str, Any]) -> np.ma.MaskedArray:
    arr = data.view(np.ma.MaskedArray)
    arr.__dict__.update(attributes)
    return arr


# --- matplotlib ----------------------------------------------------------------------------------------------------


def reduce_callback_registry(registry: Any) -> Any:
    """Reduce a matplotlib ``CallbackRegistry`` keeping also the callbacks that are methods of matplotlib objects.

    matplotlib pickles only callbacks marked picklable, which drops its own links between the objects of one figure
    (a colorbar following its image, an image following its norm): after a plain pickle a colorbar no longer follows
    ``set_clim``. Those objects (artists, colorbars, colorizers, norms) travel with the figure anyway, so their
    methods can travel too. Others stay behind, as matplotlib leaves them: a toolbar's handlers hold a GUI canvas."""
    owners = _figure_parts()
    state = registry.__getstate__()
    for signal, proxies in registry.callbacks.items():
        for cid, proxy in proxies.items():
            func = proxy()
            if cid not in registry._pickled_cids and isinstance(func, types.MethodType):
                if isinstance(func.__self__, owners):
                    state["callbacks"][signal][cid] = func
    return (copyreg.__newobj__, (type(registry),), state)


def _figure_parts() -> tuple[type, ...]:
    from matplotlib import artist, colorbar, colors

    parts: list[type] = [artist.Artist, colorbar.Colorbar, colors.Normalize]
    colorizer = sys.modules.get("matplotlib.colorizer")  # matplotlib 3.10 and later
    if colorizer is not None:
        parts.append(colorizer.Colorizer)
    return tuple(parts)


# --- torch -------------------------------------------------------------------------------------------------------


class DeviceMap:
    """Decides where tensors go: ``source_device`` when captured, ``place`` when restored.

    Subclass to simulate devices in tests, or to map devices differently (``cuda:3`` onto a one-GPU host).
    """

    def source_device(self, tensor: Any) -> str:
        return str(tensor.device)

    def available(self, device: str) -> bool:
        import torch

        dev = torch.device(device)
        if dev.type == "cpu":
            return True
        if dev.type == "cuda":
            return torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
        if dev.type == "mps":
            return torch.backends.mps.is_available()
        return False

    def place(self, storage: Any, device: str) -> Any:
        """``storage`` (on the CPU) on ``device`` if that is available here, else on the CPU."""
        if device == "cpu" or not self.available(device):
            return storage
        return storage.to(device=device)


class StorageRef:
    """One storage, once per capture, so every tensor on it pickles the same object (the pickle memo shares it)."""

    __slots__ = ("storage", "device", "__weakref__")

    def __init__(self, storage: Any, device: str) -> None:
        self.storage = storage
        self.device = device

    def reduce(self) -> Any:
        import torch

        cpu = self.storage if self.storage.device.type == "cpu" else self.storage.cpu()
        nbytes = cpu.nbytes()
        u8 = torch.empty(0, dtype=torch.uint8).set_(cpu, 0, (nbytes,), (1,))
        return (_rebuild_storage, (pickle.PickleBuffer(u8.numpy()), self.device))


class TensorReducer:
    """Per-capture state of the tensor reducer: the storage references seen so far and the device map."""

    def __init__(self, devices: DeviceMap) -> None:
        self.devices = devices
        self._storages: dict[tuple[str, int, int], StorageRef] = {}

    def reduce(self, t: Any) -> Any:
        torch = sys.modules["torch"]
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            return NotImplemented
        if t.layout != torch.strided or t.is_quantized or t.is_nested or t.device.type == "meta":
            return NotImplemented
        if t.requires_grad and t.grad_fn is not None:
            raise pickle.PicklingError(
                "a tensor that is the result of autograd operations (it has a grad_fn) cannot leave its process "
                "with its graph; store t.detach() instead"
            )
        if t.is_conj() or t.is_neg():
            t = t.resolve_conj().resolve_neg()
        storage = t.untyped_storage()
        device = self.devices.source_device(t)
        key = (str(storage.device), storage.data_ptr(), storage.nbytes())
        ref = self._storages.get(key)
        if ref is None:
            ref = self._storages[key] = StorageRef(storage, device)
        return (
            _rebuild_tensor,
            (
                ref,
                t.dtype,
                t.storage_offset(),
                tuple(t.shape),
                t.stride(),
                t.requires_grad,
                type(t) is torch.nn.Parameter,
                t.grad,
            ),
        )


_DEFAULT_DEVICES = DeviceMap()
_restore_devices: contextvars.ContextVar[DeviceMap] = contextvars.ContextVar("kernelhop_devices")


@contextlib.contextmanager
def devices_for_restore(devices: DeviceMap) -> Iterator[None]:
    token = _restore_devices.set(devices)
    try:
        yield
    finally:
        _restore_devices.reset(token)


def _rebuild_storage(buf: Any, device: str) -> Any:
    import torch

    data = memoryview(buf)
    u8 = torch.frombuffer(data, dtype=torch.uint8) if data.nbytes else torch.empty(0, dtype=torch.uint8)
    return _restore_devices.get(_DEFAULT_DEVICES).place(u8.untyped_storage(), device)


def _rebuild_tensor(
    storage: Any,
    dtype: Any,
    offset: int,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    is_parameter: bool,
    grad: Any,
) -> Any:
    import torch

    t = torch.empty(0, dtype=dtype, device=storage.device).set_(storage, offset, shape, stride)
    if is_parameter:
        t = torch.nn.Parameter(t, requires_grad=requires_grad)
    elif requires_grad:
        t.requires_grad_(True)
    if grad is not None:
        t.grad = grad
    return t
