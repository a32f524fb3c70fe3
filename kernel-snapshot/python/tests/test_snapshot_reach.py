"""cell_reach: the names a cell can read or bind, found through its code and the notebook functions it reaches."""

from __future__ import annotations

from typing import Any

import pytest
from kernelhop_snapshot.reach import cell_reach


def notebook(source: str) -> dict[str, Any]:
    """A namespace made by running `source` in it, as cells do: its functions hold it as their globals."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, "<notebook>", "exec"), ns)
    del ns["__builtins__"]
    return ns


def test_names_the_cell_reads_and_binds_and_nothing_else():
    ns = notebook("import numpy as np\nx = 1; y = 2; big = np.zeros(3); unused = [1]")
    assert cell_reach("y = x + 1", ns) == {"x", "y"}
    assert cell_reach("z = 5", ns) == frozenset()
    assert cell_reach("print(big.sum())", ns) == {"big"}  # `sum` is not a name of the namespace


def test_functions_of_the_notebook_bring_the_globals_they_use_transitively():
    ns = notebook(
        """
def helper():
    return table
def train():
    return helper() + offset
table = [1, 2]
offset = 3
unrelated = 4
"""
    )
    assert cell_reach("r = train()", ns) == {"train", "helper", "table", "offset"}


def test_methods_of_notebook_classes_reached_through_an_instance():
    ns = notebook(
        """
class Model:
    def forward(self):
        return scale * self.w
model = Model()
model.w = 2
scale = 10
other = 1
"""
    )
    assert cell_reach("out = model.forward()", ns) == {"model", "scale"}


def test_functions_inside_containers_closures_and_defaults():
    ns = notebook(
        """
def make():
    def inner():
        return deep
    return inner
handlers = {"a": lambda: limit, "b": make()}
def with_default(f=lambda: via_default):
    return f()
limit = deep = via_default = 0
"""
    )
    assert cell_reach("handlers['a']()", ns) == {"handlers", "limit", "deep"}
    assert cell_reach("with_default()", ns) == {"with_default", "via_default"}


def test_identifiers_in_strings_count_as_reached():
    ns = notebook("limit = 3; df = None; fn = None")
    # pandas' query and eval read `@limit` from the caller's globals; timeit texts name functions.
    assert cell_reach("df.query('a > @limit')", ns) == {"df", "limit"}
    assert cell_reach("import timeit\ntimeit.timeit('fn()', number=1)", ns) == {"fn"}


@pytest.mark.parametrize(
    "source",
    [
        "globals()['x']",
        "vars()['x']",
        "eval(name)",
        "import sys\nsys.modules['__main__'].x",
        "import sys\nsys._getframe().f_globals",
        "get_ipython().run_line_magic('who', '')",
        "def f(:",
    ],
)
def test_dynamic_access_or_unreadable_code_reaches_everything(source: str):
    assert cell_reach(source, notebook("x = 1; name = 'x'")) is None


def test_a_notebook_function_with_dynamic_access_reaches_everything():
    ns = notebook("def setter(k, v):\n    globals()[k] = v\n")
    assert cell_reach("setter('a', 1)", ns) is None


def test_an_object_holding_the_namespace_reaches_everything():
    ns = notebook("x = 1")
    ns["ctx"] = {"env": ns}
    assert cell_reach("ctx", ns) is None
    assert cell_reach("x", ns) == {"x"}


def test_past_the_walk_budget_everything_is_reached():
    ns = notebook("items = [[i] for i in range(100)]")
    assert cell_reach("items", ns, budget=1000) == {"items"}
    assert cell_reach("items", ns, budget=50) is None


def test_globals_dict_names_the_dict_functions_hold():
    globals_dict = notebook("def f():\n    return hidden\nhidden = 1")
    view = {k: v for k, v in globals_dict.items() if k != "__name__"}  # a filtered copy, as user_namespace makes
    assert cell_reach("f()", view, globals_dict=globals_dict) == {"f", "hidden"}
    assert cell_reach("f()", view) == {"f"}  # the copy is not the functions' globals: nothing reached through them


def test_a_star_import_reaches_everything():
    """`from m import *` binds names its code never spells: any name of the namespace may change."""
    ns = notebook("x = 1\npath = 'kept'")
    assert cell_reach("from os.path import *\ny = x", ns) is None
    assert cell_reach("if True:\n    from os import *", ns) is None
    assert cell_reach("from os.path import join\ny = x * 2", ns) == {"x"}
