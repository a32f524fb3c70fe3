"""Objects of common libraries come home exact (issue 9, section 5), end to end: real ipykernel, gateway, runtime
and worker on loopback.

For each family a cell makes values here and a `%%gpu` cell changes them; the result must be what the same two cells
give run here on a fresh namespace. Then the other way: made by a `%%gpu` cell, changed here. `exactness.py` compares
(strictly: types, dtypes, layouts, bytes, categories, fitted state, figure contents, and which objects are shared).
One kernel for the module, many values per cell.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernelhop_testing import Kernel, Stack

HERE = Path(__file__).resolve().parent

NUMPY = r'''
import numpy as np
rng = np.random.default_rng(7)
dtypes = {}
for dt in ["bool", "int8", "uint16", "int32", "int64", "uint64", "float16", "float32", "float64", "longdouble",
           "complex64", "complex128", "clongdouble", "datetime64[ns]", "datetime64[D]", "timedelta64[s]", "U7", "S5"]:
    dtypes[dt] = rng.integers(0, 100, size=(4, 3)).astype(dt)
dtypes["V3"] = np.frombuffer(bytes(range(12)), dtype="V3").copy()
nat = np.array(["2024-01-01", "NaT"], dtype="datetime64[s]")
cplx = np.array([1 + 2j, np.nan + 0j, -0.0 - 1j])
objs = np.array([{"k": 1}, None, "s", 3.5, [1, 2]], dtype=object)
structured = np.array([(1, 2.5, b"ab", (1, 2)), (3, -0.0, b"cd", (3, 4))],
                      dtype=[("i", "<i4"), ("f", ">f8"), ("s", "S2"), ("p", "i2", (2,))])
aligned = np.zeros(3, dtype=np.dtype([("a", "u1"), ("b", "f8")], align=True))
base = np.arange(60.0).reshape(6, 10)
row, strided, rev, tr, field_view = base[2], base[::2, 1::3], base[::-1, ::-1], base.T, structured["f"]
noncontig_root = np.arange(40).reshape(4, 10)[:, ::2]
view_of_noncontig = noncontig_root[1:]
fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
fortran_view = fortran[:, 1:3]
frozen = np.arange(5.0); frozen.flags.writeable = False
zero_d = np.array(2.5)
empty = np.zeros((0, 4), dtype="f4")
masked = np.ma.masked_array([1.0, 2.0, 3.0, 4.0], mask=[False, True, False, False], fill_value=-9.0)
masked_nomask = np.ma.masked_array(np.arange(4))
masked2d = np.ma.masked_invalid(np.array([[1.0, np.nan], [np.inf, 4.0]]))
masked_of_base = np.ma.masked_array(base[3], mask=base[3] > 35.0)
mat = np.matrix([[1, 2], [3, 4]])
scalars = (np.float32(1.5), np.int64(-3), np.datetime64("2024-05-06T07:08"), np.str_("x"), np.bool_(True))
'''
NUMPY_CHANGE = r'''
base[0, 0] = -1.0
row *= 2
strided[:] += 100
dtypes["float64"][1] = np.nan
dtypes["datetime64[ns]"][0, 0] += np.timedelta64(5, "ns")
dtypes["U7"][0, 0] = "changed"
objs[0]["k"] += 1
objs[4].append(3)
structured["i"] += 10
structured[0]["s"] = b"zz"
noncontig_root[0, 0] = 77
fortran_view[0, 0] = -5
masked[2] = np.ma.masked
masked.fill_value = 0.5
masked2d.harden_mask()
masked2d[0, 0] = np.ma.masked
masked_of_base[0] = np.ma.masked
mat = mat @ mat
made = np.concatenate([base.ravel(), row])
made_view = made[::7]
'''
PANDAS = r'''
import numpy as np
import pandas as pd
idx = pd.MultiIndex.from_product([["a", "b"], [1, 2, 3]], names=["letter", "num"])
df = pd.DataFrame({
    "i": np.arange(6, dtype="int32"), "f": np.linspace(0, 1, 6), "s": list("uvwxyz"),
    "o": [1, "two", 3.0, None, (5,), {"six": 6}],
    "cat": pd.Categorical(list("pqpqrp"), categories=["r", "q", "p"], ordered=True),
    "t": pd.date_range("2024-01-01", periods=6, freq="h", tz="Europe/Paris"),
    "td": pd.to_timedelta(np.arange(6), unit="s"),
    "ni": pd.array([1, None, 3, 4, None, 6], dtype="Int64"),
    "nb": pd.array([True, None, False, True, False, None], dtype="boolean"),
    "nf": pd.array([0.5, None, 1.5, 2.5, 3.5, None], dtype="Float64"),
    "ns": pd.array(["a", None, "c", "d", "e", "f"], dtype="string"),
    "per": pd.period_range("2024-01", periods=6, freq="M"),
    "iv": pd.interval_range(0, 6),
    "sp": pd.arrays.SparseArray([0, 0, 1, 0, 2, 0]),
}, index=idx)
df.attrs["source"] = "test"
s = pd.Series([1.5, None, 3.0], index=pd.Index(["x", "y", "z"], name="key"), name="s")
indexes = {
    "range": pd.RangeIndex(2, 20, 3, name="r"), "int": pd.Index([5, 1, 3], dtype="uint16"),
    "dt": pd.DatetimeIndex(["2024-01-01", "2024-02-01"], freq=None, tz="UTC"),
    "dt_freq": pd.date_range("2024-01-01", periods=4, freq="D"),
    "td": pd.timedelta_range("1 day", periods=3), "period": pd.period_range("2024Q1", periods=3, freq="Q"),
    "cat": pd.CategoricalIndex(["a", "b", "a"], categories=["b", "a"]), "iv": pd.IntervalIndex.from_breaks([0, 1, 5]),
    "multi": idx, "obj": pd.Index([1, "a", None], dtype=object), "str": pd.Index(["p", "q"]),
}
cat = pd.Categorical(["lo", "hi", "lo", None], categories=["lo", "mid", "hi"], ordered=True)
strings_default = pd.Series(["a", None, "c"])
try:
    import pyarrow  # noqa: F401
    arrow_strings = pd.Series(["a", None, "ccc"], dtype="string[pyarrow]")
except ImportError:
    pass
'''
PANDAS_CHANGE = r'''
df.loc[("a", 2), "f"] = -0.0
df["cat"] = df["cat"].cat.add_categories(["z"])
df.iloc[0, df.columns.get_loc("cat")] = "z"
df["ni"] = df["ni"] * 2
df["new"] = df["i"].astype("float32") / 3
df = df.sort_index(ascending=False)
s["y"] = 2.25
s.index.name = "renamed"
cat = cat.add_categories("top")
cat[3] = "top"
indexes["int"] = indexes["int"].append(pd.Index([9], dtype="uint16"))
grouped = df.groupby(level="letter")["f"].sum()
pivot = df.reset_index().pivot_table(index="letter", columns="num", values="f")
strings_default = strings_default.str.upper()
'''
SPARSE = r'''
import numpy as np
import scipy.sparse as sp
csr = sp.random(30, 20, density=0.2, format="csr", random_state=1, dtype=np.float32)
csc = csr.tocsc()
coo = sp.coo_matrix(([1, 2, 3], ([0, 2, 2], [1, 0, 1])), shape=(4, 3))
csr_arr = sp.csr_array(csr)
coo_arr = sp.coo_array(np.eye(3, dtype=np.int8))
dok = sp.dok_matrix((5, 5)); dok[1, 2] = 3.0
lil = sp.lil_array((3, 4)); lil[0, 1] = 2
bsr = sp.bsr_matrix(np.kron(np.eye(2), np.ones((2, 2))), blocksize=(2, 2))
dia = sp.dia_matrix((np.array([[1, 2, 3, 4]]), [0]), shape=(4, 4))
unsorted = sp.csr_matrix((np.array([1.0, 2.0]), np.array([2, 0]), np.array([0, 2, 2])), shape=(2, 3))
'''
SPARSE_CHANGE = r'''
csr = csr @ csr.T
csc[0, 0] = 42.0
coo = coo.tocsr()
csr_arr = csr_arr.multiply(2).tocsr()
coo_arr.data[0] = 9
dok[4, 4] = 1.5
lil[2, 3] = 7
unsorted.sum_duplicates()
'''
SKLEARN = r'''
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline, Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.decomposition import PCA
rng = np.random.default_rng(3)
X = rng.normal(size=(60, 4))
y = (X[:, 0] + X[:, 1] > 0).astype(int)
pipe = make_pipeline(StandardScaler(), PCA(n_components=3, random_state=0), LogisticRegression())
forest = RandomForestClassifier(n_estimators=5, random_state=0)
cats = np.array([["a"], ["b"], ["a"], ["c"]] * 15)
def add_one(v):
    return v + 1
curve = make_pipeline(FunctionTransformer(np.log1p), FunctionTransformer(add_one), Ridge(alpha=0.5))
encoder = Pipeline([("pre", ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), [0])])),
                    ("clf", LogisticRegression())])
'''
SKLEARN_CHANGE = r'''
pipe.fit(X, y)
forest.fit(X, y)
encoder.fit(cats, y)
curve.fit(np.abs(X), X[:, 0])
predictions = (pipe.predict(X), pipe.predict_proba(X), forest.predict_proba(X), encoder.predict(cats),
               curve.predict(np.abs(X)))
'''
MPL = r'''
import matplotlib
import matplotlib.pyplot as plt
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6, 3))
ax1.plot([1, 3, 2], label="first")
ax1.set_title("left")
from matplotlib.figure import Figure
loose = Figure(figsize=(2, 2))
loose.add_subplot().bar([0, 1], [3, 4])
image_fig, image_ax = plt.subplots()
image = image_ax.imshow([[0.0, 0.5], [0.25, 1.0]], cmap="viridis")
image_fig.colorbar(image)
twin = ax2.twinx()
'''
MPL_CHANGE = r'''
ax1.plot([0, 1, 2], [2, 2, 0], "r--", label="second")
ax1.legend()
ax2.scatter([1, 2], [3, 4])
ax2.set_xlabel("x")
fig.suptitle("both")
loose.axes[0].set_title("loose")
lines = ax1.get_lines()
image.set_clim(0.1, 0.9)
twin.plot([5, 6], "g")
'''
TORCH = r'''
import torch
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
with torch.no_grad():
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=gen))
tied = torch.nn.Linear(3, 3, bias=False)
with torch.no_grad():
    tied.weight.copy_(torch.randn(3, 3, generator=gen))
opt = torch.optim.SGD(list(model.parameters()) + [tied.weight], lr=0.1, momentum=0.9)
adam = torch.optim.Adam(tied.parameters(), lr=1e-3)
data = torch.randn(16, 4, generator=gen)
target = torch.randint(0, 2, (16,), generator=gen)
half = torch.arange(6, dtype=torch.bfloat16)
embed = torch.nn.Embedding(5, 3)
unembed = torch.nn.Linear(3, 5, bias=False)
unembed.weight = embed.weight  # weight tying: one parameter in two modules
with torch.no_grad():
    embed.weight.copy_(torch.randn(5, 3, generator=gen))
lm_opt = torch.optim.AdamW(list(embed.parameters()) + list(unembed.parameters()), lr=0.01)
schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
view = data[::2, 1:]
as_numpy = data.numpy()  # shares the tensor's memory
'''
# One thread in the cell that computes: a reduction's float result depends on how many threads share it, and the
# worker's process has its own count (not state of the namespace).
TORCH_CHANGE = r'''
torch.set_num_threads(1)
for _ in range(2):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(data), target)
    loss.backward()
    tied.weight.grad = torch.ones_like(tied.weight)
    opt.step()
    adam.step()
    schedule.step()
tokens = torch.tensor([0, 3, 4])
lm_loss = unembed(embed(tokens)).logsumexp(-1).sum()
lm_loss.backward()
lm_opt.step()
lm_loss = lm_loss.detach()
loss = loss.detach()
model.eval()
out = model(data).detach()
scheduler_lr = opt.param_groups[0]["lr"]
data[0, 1] = 100.0
'''
FAMILIES = {"numpy": (NUMPY, NUMPY_CHANGE), "pandas": (PANDAS, PANDAS_CHANGE), "sparse": (SPARSE, SPARSE_CHANGE),
            "sklearn": (SKLEARN, SKLEARN_CHANGE), "matplotlib": (MPL, MPL_CHANGE), "torch": (TORCH, TORCH_CHANGE)}


@pytest.fixture(scope="module")
def family_kernel(stack: Stack) -> Iterator[Kernel]:
    k = Kernel(stack.env())
    # The comparison module is imported by __import__ in each check, so no name of it enters the namespace (which
    # every hop carries, and which the runtime could not import).
    ok(k, f"import sys\nsys.path.insert(0, {str(HERE)!r})")
    yield k
    k.shutdown()


def ok(kernel: Kernel, code: str) -> None:
    execution = kernel.run(code)
    assert execution.status == "ok", execution.error_text
    warnings = [line for line in execution.stream_text("stderr").splitlines() if "kernelhop" in line]
    assert not warnings, f"everything must travel, without a warning: {warnings}"


def differences(kernel: Kernel, reference_code: str) -> list[str]:
    """What the kernel's variables made by ``reference_code`` differ in from running that code here afresh."""
    check = (
        "print(__import__('json').dumps(__import__('exactness').compare_namespaces("
        f"globals(), __import__('exactness').run_copy({reference_code!r}))))"
    )
    execution = kernel.run(check)
    assert execution.status == "ok", execution.error_text
    return json.loads(execution.stream_text("stdout").strip().splitlines()[-1])


def forget(kernel: Kernel, code: str) -> None:
    ok(kernel, f"for _name in __import__('exactness').run_copy({code!r}):\n    globals().pop(_name, None)\ndel _name")


@pytest.mark.parametrize("family", FAMILIES)
def test_made_here_changed_remotely_and_made_remotely_changed_here(family_kernel: Kernel, family: str) -> None:
    setup, change = FAMILIES[family]
    ok(family_kernel, setup)
    ok(family_kernel, "%%gpu h100 --quiet\n" + change)
    assert differences(family_kernel, setup + change) == [], "made here, changed remotely"

    # Forgotten here first, so that what the remote cell makes really comes home (a hop leaves alone a variable whose
    # capture is the same on both sides).
    forget(family_kernel, setup + change)
    ok(family_kernel, "%%gpu h100 --quiet\n" + setup)
    assert differences(family_kernel, setup) == [], "made remotely"
    ok(family_kernel, change)
    assert differences(family_kernel, setup + change) == [], "made remotely, changed here"
