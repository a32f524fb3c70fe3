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


def test_empty_arrays_stay_writeable_with_their_strides(store):
    empty = np.zeros((0, 4), dtype="f4")
    frozen = np.zeros(0)
    frozen.flags.writeable = False
    out = round_trip({"empty": empty, "frozen": frozen}, store)
    assert out["empty"].flags.writeable and out["empty"].strides == empty.strides
    out["empty"][...] = 1.0  # numpy's own rebuild on an empty buffer gave a read-only array
    assert not out["frozen"].flags.writeable


def test_masked_arrays_keep_their_mask_settings_and_their_base(store):
    base = np.arange(8.0)
    over_base = np.ma.masked_array(base[2:], mask=base[2:] > 5)
    hard = np.ma.masked_invalid(np.array([[1.0, np.nan], [np.inf, 4.0]]))
    hard.harden_mask()
    hard.fill_value = -1.5
    out = round_trip({"base": base, "over_base": over_base, "hard": hard}, store)
    assert type(out["hard"]) is np.ma.MaskedArray
    assert out["hard"].hardmask and out["hard"].fill_value == -1.5  # numpy's own pickle drops the hard mask
    assert np.array_equal(np.ma.getmaskarray(out["hard"]), np.ma.getmaskarray(hard))
    out["hard"][0, 1] = 9.0  # a hard mask keeps masked values masked
    assert out["hard"].mask[0, 1]
    out["base"][3] = -7.0  # the masked array still views the base (numpy's own pickle copies it)
    assert out["over_base"].data[1] == -7.0
    assert np.array_equal(out["over_base"].mask, over_base.mask)


def test_a_colorbar_still_follows_its_image(store):
    import matplotlib

    matplotlib.use("agg")
    from matplotlib.figure import Figure

    fig = Figure()
    image = fig.add_subplot().imshow([[0.0, 0.5], [0.25, 1.0]])
    bar = fig.colorbar(image)
    out = round_trip({"fig": fig, "image": image, "bar": bar}, store)
    out["image"].set_clim(0.1, 0.9)  # after matplotlib's own pickle the colorbar kept 0..1
    assert out["bar"].ax.get_ylim() == (0.1, 0.9)
    assert out["bar"].mappable is out["image"]


def test_a_figure_travels_without_handlers_of_other_objects(store, monkeypatch):
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import NavigationToolbar2

    def refuse(self, protocol):
        raise TypeError("a GUI toolbar cannot be pickled")  # as one bound to a Qt canvas

    monkeypatch.setattr(NavigationToolbar2, "__reduce_ex__", refuse)
    fig, _ = plt.subplots()
    toolbar = NavigationToolbar2(fig.canvas)
    out = round_trip({"fig": fig}, store)  # the toolbar's handlers are methods of matplotlib's, not of the figure
    handlers = [proxy() for proxies in out["fig"].canvas.callbacks.callbacks.values() for proxy in proxies.values()]
    assert handlers and not any(getattr(h, "__self__", None) is toolbar for h in handlers)
    plt.close(fig)
