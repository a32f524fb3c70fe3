import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from snapshot_helpers import round_trip

DTYPES = ["bool", "int8", "uint16", "int32", "int64", "float16", "float32", "float64", "complex64", "complex128",
          "datetime64[ns]", "timedelta64[s]", "U7", "S5", "V3"]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(store, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 100, size=(7, 5)).astype(dtype) if dtype != "V3" else np.zeros(4, dtype="V3")
    out = round_trip({"x": x}, store)["x"]
    assert out.dtype == x.dtype and out.shape == x.shape
    assert np.array_equal(out, x) if x.dtype.kind != "V" else out.tobytes() == x.tobytes()
    assert out.flags.writeable


def test_structured_and_object_and_shapes(store):
    structured = np.array([(1, 2.5, b"ab"), (3, 4.5, b"cd")], dtype=[("i", "i4"), ("f", "f8"), ("s", "S2")])
    zero_d = np.array(3.25)
    empty = np.zeros((0, 3))
    objects = np.array([{"a": 1}, None, "s"], dtype=object)
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    out = round_trip({"st": structured, "z": zero_d, "e": empty, "o": objects, "f": fortran}, store)
    assert out["st"].dtype == structured.dtype and np.array_equal(out["st"], structured)
    assert out["z"].shape == () and out["z"] == 3.25
    assert out["e"].shape == (0, 3)
    assert list(out["o"]) == list(objects)
    assert out["f"].flags.f_contiguous and np.array_equal(out["f"], fortran)


def test_views_share_their_base(store):
    base = np.arange(100.0).reshape(10, 10)
    ns = {
        "base": base,
        "row": base[3],
        "strided": base[::2, 1::3],
        "reversed": base[::-1, ::-1],
        "t": base.T,
        "bytes_view": base.view(np.uint8),
    }
    out = round_trip(ns, store)
    for name, v in ns.items():
        assert np.array_equal(out[name], v), name
        assert out[name].strides == v.strides, name
    out["base"][3, 0] = -1
    assert out["row"][0] == -1
    assert out["t"][0, 3] == -1
    assert out["reversed"][6, 9] == -1
    out["strided"][0, 0] = -7
    assert out["base"][0, 1] == -7


def test_views_without_their_base_in_namespace(store):
    base = np.arange(20)
    out = round_trip({"a": base[2:6], "b": base[4:9]}, store)
    out["a"][2] = 99  # element 4 of the shared base
    assert out["b"][0] == 99


def test_fortran_base_views(store):
    base = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    out = round_trip({"base": base, "v": base[::-1, 1:3]}, store)
    out["base"][2, 1] = 100
    assert out["v"][0, 0] == 100


def test_read_only_arrays_stay_read_only(store):
    frozen = np.arange(5)
    frozen.flags.writeable = False
    writable = np.arange(5)
    ro_view = writable[1:]
    ro_view.flags.writeable = False
    out = round_trip({"frozen": frozen, "writable": writable, "ro_view": ro_view}, store)
    assert not out["frozen"].flags.writeable
    assert not out["ro_view"].flags.writeable
    assert out["writable"].flags.writeable


def test_pandas(store):
    df = pd.DataFrame(
        {
            "a": np.arange(5),
            "b": np.linspace(0, 1, 5),
            "c": list("vwxyz"),
            "d": pd.Categorical(["p", "q", "p", "q", "p"]),
            "t": pd.date_range("2024-01-01", periods=5, tz="UTC"),
        }
    ).set_index("c")
    s = pd.Series([1.5, None, 3.0], index=["x", "y", "z"], name="s")
    holder = {"df": df}
    out = round_trip({"df": df, "s": s, "holder": holder}, store)
    pd.testing.assert_frame_equal(out["df"], df)
    pd.testing.assert_series_equal(out["s"], s)
    assert out["holder"]["df"] is out["df"]


def test_scipy_sparse(store):
    m = sp.random(50, 40, density=0.1, format="csr", random_state=0)
    c = m.tocoo()
    out = round_trip({"m": m, "c": c}, store)
    assert (out["m"] != m).nnz == 0
    assert (out["c"].tocsr() != m).nnz == 0
    assert out["m"].format == "csr"
