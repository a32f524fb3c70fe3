"""Strict comparison of two object graphs of common libraries, for the end-to-end tests of what a hop brings home.

Imported inside the test's kernel (``__import__("exactness")``, so no name of it is in the notebook's namespace).

``differences(actual, expected)`` walks both graphs side by side and returns what differs, as readable lines:
- types must be the very same class; numbers and strings equal (floats bit for bit, so -0.0 and NaN count);
- numpy arrays: dtype, shape, strides, writeable flag and the bytes of each element (structured dtypes field by field,
  object arrays element by element); masked arrays also mask, fill value and hardness;
- pandas objects through ``pandas.testing`` with exact values, dtypes, index types, categories and ``attrs``;
- torch tensors: class (Parameter or not), dtype, shape, strides, offset, device, ``requires_grad``, bytes and grad;
- matplotlib figures: size, dpi, each axes' title, labels, limits, line data and colours, and the SVG they save;
- any other object by what pickle would save of it (``__reduce_ex__``): fitted estimators, sparse matrices, torch
  modules and optimizers are compared by their whole state;
- sharing: an object reached twice on one side must be reached as one object on the other side too (a model's
  parameter and the optimizer's), and two arrays (or tensors) share memory on one side exactly when their
  counterparts do (views of one base).
"""

from __future__ import annotations

import io
import math
import struct
import sys
import types
from typing import Any

_ATOMS = (int, bool, str, bytes, type(None), range, slice, type(Ellipsis))


def differences(actual: Any, expected: Any) -> list[str]:
    walk = _Walk()
    walk.compare(actual, expected, "")
    walk.compare_memory_sharing()
    return walk.found


def run_copy(code: str) -> dict[str, Any]:
    """Run ``code`` as a notebook cell would, in a fresh namespace: the reference to compare a hop's result with."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(code, "<reference>", "exec"), namespace)
    return namespace


def compare_namespaces(here: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """``differences`` of every variable of ``reference`` (modules and private names aside), all in one walk so that
    objects shared between variables must be shared alike."""
    names = sorted(n for n, v in reference.items() if not n.startswith("_") and not isinstance(v, types.ModuleType))
    missing = [n for n in names if n not in here]
    if missing:
        return [f"missing here: {', '.join(missing)}"]
    return differences({n: here[n] for n in names}, {n: reference[n] for n in names})


class _Walk:
    def __init__(self) -> None:
        self.found: list[str] = []
        self._pairs: dict[int, Any] = {}
        self._back: dict[int, Any] = {}
        self._alive: list[Any] = []  # keeps walked objects alive, so ids stay unique during the walk
        self._buffers: list[tuple[str, Any, Any]] = []

    def differ(self, path: str, what: str) -> None:
        self.found.append(f"{path or '<top>'}: {what}")

    def compare(self, a: Any, b: Any, path: str) -> None:
        if type(a) is not type(b):
            self.differ(path, f"type {_name(type(a))} != {_name(type(b))}")
            return
        if isinstance(a, _ATOMS):
            if a != b:
                self.differ(path, f"{a!r} != {b!r}")
            return
        if isinstance(a, float | complex):
            if _float_bits(a) != _float_bits(b):
                self.differ(path, f"{a!r} != {b!r}")
            return
        if isinstance(a, tuple | frozenset) or _is_value(a):
            # Immutable: equal values are interchangeable, so identity is not asked of them (pickle makes a dtype
            # anew; one code object's equal constants are one tuple).
            self._dispatch(a, b, path)
            return
        if not self._first_visit(a, b, path):
            return
        self._dispatch(a, b, path)

    def _first_visit(self, a: Any, b: Any, path: str) -> bool:
        """Record the pair; False when either side was seen before (then the other side must have been, as its
        counterpart: sharing is kept)."""
        seen_a, seen_b = self._pairs.get(id(a)), self._back.get(id(b))
        if seen_a is None and seen_b is None:
            self._pairs[id(a)] = b
            self._back[id(b)] = a
            self._alive += [a, b]
            return True
        if seen_a is not b or seen_b is not a:
            self.differ(path, "an object shared on one side is not shared alike on the other")
        return False

    def _dispatch(self, a: Any, b: Any, path: str) -> None:
        np = sys.modules.get("numpy")
        pd = sys.modules.get("pandas")
        torch = sys.modules.get("torch")
        mpl_figure = sys.modules.get("matplotlib.figure")
        mpl_artist = sys.modules.get("matplotlib.artist")
        if isinstance(a, type | types.ModuleType | types.BuiltinFunctionType) or callable(a) and _importable(a):
            if a is not b:
                self.differ(path, f"{a!r} is not {b!r}")
        elif np is not None and isinstance(a, np.ndarray):
            self._arrays(a, b, path, np)
        elif np is not None and isinstance(a, np.generic):
            if a.dtype != b.dtype or a.tobytes() != b.tobytes():
                self.differ(path, f"{a!r} != {b!r}")
        elif np is not None and isinstance(a, np.dtype):
            if a != b:
                self.differ(path, f"dtype {a} != {b}")
        elif np is not None and isinstance(a, np.random.RandomState | np.random.Generator):
            state = a.get_state(legacy=False) if isinstance(a, np.random.RandomState) else a.bit_generator.state
            other = b.get_state(legacy=False) if isinstance(b, np.random.RandomState) else b.bit_generator.state
            self.compare(state, other, f"{path}.state")
        elif pd is not None and isinstance(a, pd.DataFrame | pd.Series | pd.Index | pd.api.extensions.ExtensionArray):
            self._pandas(a, b, path, pd)
        elif pd is not None and isinstance(a, pd.Timestamp | pd.Timedelta | pd.Period | type(pd.NaT)):
            if repr(a) != repr(b):
                self.differ(path, f"{a!r} != {b!r}")
        elif torch is not None and isinstance(a, torch.Tensor):
            self._tensors(a, b, path, torch)
        elif torch is not None and isinstance(a, torch.dtype | torch.device | torch.Size):
            if a != b:
                self.differ(path, f"{a!r} != {b!r}")
        elif mpl_figure is not None and isinstance(a, mpl_figure.Figure):
            self._figures(a, b, path)
        elif mpl_artist is not None and isinstance(a, mpl_artist.Artist):
            # An artist by what it shows and where it sits: its figure (walked, so it must be the counterpart of the
            # figure reached elsewhere), its axes, and its place among them.
            self.compare((a.figure, a.axes, _artist_content(a)), (b.figure, b.axes, _artist_content(b)), path)
        elif isinstance(a, list | tuple):
            self._sequences(a, b, path)
        elif isinstance(a, dict):
            self._dicts(a, b, path)
        elif isinstance(a, set | frozenset):
            if a != b:
                self.differ(path, f"{a!r} != {b!r}")
        elif isinstance(a, types.FunctionType):
            # By what the code does: where it was compiled (the file name) differs between a cell and its reference.
            if _code(a.__code__) != _code(b.__code__) or a.__qualname__ != b.__qualname__:
                self.differ(path, f"function {a.__qualname__} != {b.__qualname__}")
        else:
            self._by_reduction(a, b, path)

    def _sequences(self, a: Any, b: Any, path: str) -> None:
        if len(a) != len(b):
            self.differ(path, f"length {len(a)} != {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            self.compare(x, y, f"{path}[{i}]")

    def _dicts(self, a: dict, b: dict, path: str) -> None:
        # In order, keys compared as objects too: an optimizer's state is keyed by the model's own parameters.
        if len(a) != len(b):
            self.differ(path, f"{len(a)} keys != {len(b)}: {list(a)[:10]} != {list(b)[:10]}")
            return
        for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items(), strict=True)):
            self.compare(ka, kb, f"{path}<key {i}>")
            self.compare(va, vb, f"{path}[{ka!r}]" if isinstance(ka, _ATOMS) else f"{path}<value {i}>")
        default_a, default_b = getattr(a, "default_factory", None), getattr(b, "default_factory", None)
        if default_a is not default_b:
            self.compare(default_a, default_b, f"{path}.default_factory")
        if type(a) is not dict and hasattr(a, "__dict__"):
            self.compare(vars(a), vars(b), f"{path}.__dict__")

    def _by_reduction(self, a: Any, b: Any, path: str) -> None:
        try:
            ra, rb = a.__reduce_ex__(4), b.__reduce_ex__(4)
        except Exception as e:  # noqa: BLE001 - both sides must fail alike
            self.differ(path, f"cannot compare {_name(type(a))}: {type(e).__name__}: {e}")
            return
        if isinstance(ra, str) or isinstance(rb, str):  # a global, by name
            if ra != rb:
                self.differ(path, f"{ra!r} != {rb!r}")
            return
        self._sequences(_listed(ra), _listed(rb), f"{path}<{_name(type(a))}>")

    def _arrays(self, a: Any, b: Any, path: str, np: Any) -> None:
        for what in ("dtype", "shape"):
            if getattr(a, what) != getattr(b, what):
                self.differ(path, f"{what} {getattr(a, what)} != {getattr(b, what)}")
                return
        # The stride of an axis of length 1 has no meaning (numpy's contiguity flags ignore it; copies change it).
        if _strides(a) != _strides(b) or (a.flags.c_contiguous, a.flags.f_contiguous) != (b.flags.c_contiguous,
                                                                                          b.flags.f_contiguous):
            self.differ(path, f"layout: strides {a.strides} != {b.strides}")
        if a.flags.writeable != b.flags.writeable:
            self.differ(path, f"writeable {a.flags.writeable} != {b.flags.writeable}")
        if isinstance(a, np.ma.MaskedArray):
            self.compare(np.ma.getmaskarray(a), np.ma.getmaskarray(b), f"{path}.mask")
            self.compare(a.fill_value, b.fill_value, f"{path}.fill_value")
            self.compare(a.hardmask, b.hardmask, f"{path}.hardmask")
            self.compare(a.data, b.data, f"{path}.data")
            return
        if type(a) is not np.ndarray:
            self.compare(vars(a), vars(b), f"{path}.__dict__")
        plain_a, plain_b = a.view(np.ndarray), b.view(np.ndarray)
        if a.dtype.names:
            for field in a.dtype.names:
                self.compare(plain_a[field], plain_b[field], f"{path}[{field!r}]")
        elif a.dtype.hasobject:
            self._sequences(plain_a.ravel(order="K").tolist(), plain_b.ravel(order="K").tolist(), path)
        else:
            self._buffers.append((path, plain_a, plain_b))
            if a.dtype.kind in "fc":
                # By value and sign, not bytes: long doubles carry padding bytes of no meaning.
                same = np.array_equal(plain_a, plain_b, equal_nan=True) and np.array_equal(
                    np.signbit(plain_a.real), np.signbit(plain_b.real)
                )
            else:
                same = plain_a.tobytes(order="A") == plain_b.tobytes(order="A")
            if not same:
                self.differ(path, f"values differ:\n{a!r}\n!=\n{b!r}")

    def _pandas(self, a: Any, b: Any, path: str, pd: Any) -> None:
        exact = {"check_exact": True}
        try:
            if isinstance(a, pd.DataFrame):
                pd.testing.assert_frame_equal(a, b, check_column_type=True, check_index_type=True, check_freq=True,
                                              check_flags=True, check_like=False, **exact)  # fmt: skip
            elif isinstance(a, pd.Series):
                pd.testing.assert_series_equal(a, b, check_index_type=True, check_series_type=True, check_freq=True,
                                               check_flags=True, check_category_order=True, **exact)  # fmt: skip
            elif isinstance(a, pd.Index):
                pd.testing.assert_index_equal(a, b, exact=True, check_categorical=True, check_order=True, **exact)
            else:
                pd.testing.assert_extension_array_equal(a, b, **exact)
        except AssertionError as e:
            self.differ(path, f"pandas: {e}")
        if isinstance(a, pd.DataFrame | pd.Series):
            self.compare(a.attrs, b.attrs, f"{path}.attrs")
            self.compare(list(a.axes), list(b.axes), f"{path}.axes")
            columns_a = [a.iloc[:, i].array for i in range(a.shape[1])] if isinstance(a, pd.DataFrame) else [a.array]
            columns_b = [b.iloc[:, i].array for i in range(b.shape[1])] if isinstance(b, pd.DataFrame) else [b.array]
            self.compare([type(c) for c in columns_a], [type(c) for c in columns_b], f"{path}<array types>")
        else:
            self.compare(a.dtype, b.dtype, f"{path}.dtype")
            if isinstance(a, pd.Categorical | pd.CategoricalIndex):
                self.compare((a.categories, a.ordered), (b.categories, b.ordered), f"{path}<categories>")
            if isinstance(a, pd.Index):
                self.compare((a.name, getattr(a, "freq", None)), (b.name, getattr(b, "freq", None)), f"{path}.name")

    def _tensors(self, a: Any, b: Any, path: str, torch: Any) -> None:
        for what in ("dtype", "shape", "device", "requires_grad", "is_leaf"):
            if getattr(a, what) != getattr(b, what):
                self.differ(path, f"{what} {getattr(a, what)} != {getattr(b, what)}")
                return
        if a.stride() != b.stride() or a.storage_offset() != b.storage_offset():
            self.differ(path, f"layout {a.stride()}+{a.storage_offset()} != {b.stride()}+{b.storage_offset()}")
        raw_a, raw_b = (t.detach().cpu().contiguous().reshape(-1).view(torch.uint8) for t in (a, b))
        if not torch.equal(raw_a, raw_b):
            self.differ(path, f"values differ:\n{a!r}\n!=\n{b!r}")
        self._buffers.append((path, a, b))
        self.compare(a.grad, b.grad, f"{path}.grad")

    def _figures(self, a: Any, b: Any, path: str) -> None:
        self.compare(_figure_content(a), _figure_content(b), f"{path}<figure>")
        self.compare(list(a.axes), list(b.axes), f"{path}.axes")
        svg_a, svg_b = _svg(a), _svg(b)
        if svg_a != svg_b:
            self.differ(path, f"savefig output differs ({len(svg_a)} != {len(svg_b)} bytes)")

    def compare_memory_sharing(self) -> None:
        for i, (path_i, a_i, b_i) in enumerate(self._buffers):
            for path_j, a_j, b_j in self._buffers[i + 1 :]:
                if _share(a_i, a_j) != _share(b_i, b_j):
                    self.differ(f"{path_i} and {path_j}", "share memory on one side only")


def _strides(a: Any) -> tuple[int | None, ...]:
    return tuple(stride if n > 1 else None for n, stride in zip(a.shape, a.strides, strict=True))


def _share(x: Any, y: Any) -> bool:
    import numpy as np

    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        return bool(np.shares_memory(x, y))
    (x_start, x_end), (y_start, y_end) = _bounds(x), _bounds(y)
    return x_start < y_end and y_start < x_end


def _bounds(v: Any) -> tuple[int, int]:
    """The bytes an array or a tensor's storage spans."""
    import numpy as np

    if isinstance(v, np.ndarray):
        return np.lib.array_utils.byte_bounds(v)
    storage = v.untyped_storage()
    return storage.data_ptr(), storage.data_ptr() + storage.nbytes()


def _figure_content(fig: Any) -> dict[str, Any]:
    return {
        "size": tuple(fig.get_size_inches()),
        "dpi": fig.dpi,
        "suptitle": fig._suptitle.get_text() if fig._suptitle is not None else None,
        "axes": [_artist_content(ax) for ax in fig.axes],
    }


def _artist_content(artist: Any) -> Any:
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D
    from matplotlib.text import Text

    if isinstance(artist, Axes):
        return {
            "title": artist.get_title(),
            "labels": (artist.get_xlabel(), artist.get_ylabel()),
            "limits": (artist.get_xlim(), artist.get_ylim()),
            "lines": [_artist_content(line) for line in artist.get_lines()],
            "collections": [c.get_offsets().tolist() for c in artist.collections],
            "patches": [p.get_bbox().bounds for p in artist.patches],
            "texts": [t.get_text() for t in artist.texts],
            "legend": None if artist.get_legend() is None else [t.get_text() for t in artist.get_legend().get_texts()],
        }
    if isinstance(artist, Line2D):
        line = artist
        return (line.get_xydata(), line.get_color(), line.get_label(), line.get_linestyle(), line.get_marker())
    if isinstance(artist, Text):
        return artist.get_text()
    return artist.get_label()


def _svg(fig: Any) -> bytes:
    import matplotlib

    out = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "kernelhop"}):
        fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def _is_value(obj: Any) -> bool:
    """An immutable value of a library (dtypes, scalars, devices)."""
    np, torch, pd = (sys.modules.get(m) for m in ("numpy", "torch", "pandas"))
    return (
        np is not None and isinstance(obj, np.dtype | np.generic)
        or torch is not None and isinstance(obj, torch.dtype | torch.device | torch.Size)
        or pd is not None and isinstance(obj, pd.Timestamp | pd.Timedelta | pd.Period | type(pd.NaT))
    )


def _listed(reduction: tuple[Any, ...]) -> list[Any]:
    """A reduction tuple with its item iterators as lists."""
    return [list(x) if isinstance(x, types.GeneratorType) or type(x).__name__.endswith("iterator") else x
            for x in reduction]  # fmt: skip


def _importable(obj: Any) -> bool:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or module not in sys.modules:
        return False
    target: Any = sys.modules[module]
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target is obj


def _code(code: types.CodeType) -> tuple[Any, ...]:
    consts = tuple(_code(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.co_code, consts, code.co_names, code.co_varnames, code.co_freevars


def _float_bits(x: float | complex) -> bytes:
    parts = (x.real, x.imag) if isinstance(x, complex) else (x,)
    return b"".join(b"nan" if math.isnan(p) else struct.pack("<d", p) for p in parts)


def _name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"
