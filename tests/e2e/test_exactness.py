"""The comparison the family tests rely on (exactness.py) tells apart what a hop must keep: a check that cannot
fail would let any inexact hop pass."""

from __future__ import annotations

import copy

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from exactness import differences
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression

matplotlib.use("agg")


def _made() -> tuple[object, ...]:
    torch.manual_seed(0)
    base = np.arange(10.0)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    return base, base[2:5], model, opt, fig, pd.DataFrame({"a": [1.5, None]}), np.ma.masked_array([1, 2], [0, 1])


def test_the_same_values_made_twice_have_no_differences() -> None:
    assert differences(_made(), _made()) == []


def _changed_optimizer_sharing() -> tuple[object, object]:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return (model, opt), (copy.deepcopy(model), copy.deepcopy(opt))  # the copied optimizer holds other parameters


def _figure(title: str) -> Figure:
    fig = Figure()
    fig.add_subplot().set_title(title)
    return fig


base = np.arange(10.0)
hard = np.ma.masked_array([1.0, 2.0], mask=[0, 1])
hard.harden_mask()
fitted = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
nudged = copy.deepcopy(fitted)
nudged.coef_[0, 0] += 1e-12
tensor = torch.arange(4.0)
CASES = {
    "parameter sharing": _changed_optimizer_sharing(),
    "a view that no longer views": ((base, base[2:5]), (base.copy(), base[2:5].copy())),
    "dtype": (np.arange(3), np.arange(3, dtype="int32")),
    "sign of zero": (np.array([0.0]), np.array([-0.0])),
    "strides": (np.zeros((3, 4)), np.asfortranarray(np.zeros((3, 4)))),
    "read-only": (base, np.lib.stride_tricks.as_strided(base, writeable=False)),
    "hard mask": (hard, np.ma.masked_array([1.0, 2.0], mask=[0, 1])),
    "category order": (pd.Categorical(["a", "b"], ["a", "b"]), pd.Categorical(["a", "b"], ["b", "a"])),
    "index type": (pd.Series([1], index=pd.Index([0], dtype="int32")), pd.Series([1])),
    "nullable dtype": (pd.Series([1, 2], dtype="Int64"), pd.Series([1, 2])),
    "fitted attribute": (fitted, nudged),
    "figure title": (_figure("a"), _figure("b")),
    "an array that no longer views its tensor": ((tensor, tensor.numpy()), (tensor, tensor.numpy().copy())),
    "tensor class": (torch.nn.Parameter(torch.ones(2)), torch.ones(2, requires_grad=True)),
}


@pytest.mark.parametrize("case", CASES)
def test_each_kind_of_difference_is_found(case: str) -> None:
    actual, expected = CASES[case]
    assert differences(actual, expected)
