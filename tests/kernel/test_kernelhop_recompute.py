"""The recipe finder (kernelhop/recompute.py): which statement rebuilds an unpicklable variable on the runtime."""

import pytest
from IPython.core.interactiveshell import InteractiveShell

from kernelhop.recompute import CellLog, find_recipes


def recipes(cells, *names, stopped_at=None):
    plan = find_recipes(["", *cells], names, stopped_at)
    return {n: r.code for n, r in plan.recipes.items()}, plan


def test_the_most_recent_binding_is_the_recipe():
    found, _ = recipes(["fh = open('a.txt')", "x = 1\nfh = open('b.txt', 'w')", "print(fh)"], "fh")
    assert found == {"fh": "fh = open('b.txt', 'w')"}


@pytest.mark.parametrize(
    ("cell", "name", "code"),
    [
        ("n, fh = (1, open('a'))", "fh", "n, fh = (1, open('a'))"),
        ("fh: object = open('a')", "fh", "fh: object = open('a')"),
        ("with open('a') as fh:\n    head = fh.readline()", "fh", "with open('a') as fh:\n    head = fh.readline()"),
        ("for row in rows:\n    pass", "row", "for row in rows:\n    pass"),
        ("import threading as th", "th", "import threading as th"),
        ("from threading import Lock", "Lock", "from threading import Lock"),
        ("def g():\n    yield 1", "g", "def g():\n    yield 1"),
        ("@decorate\nclass C:\n    pass", "C", "@decorate\nclass C:\n    pass"),
        ("sizes = [(last := open(p)) for p in paths]", "last", "sizes = [(last := open(p)) for p in paths]"),
        (
            "try:\n    lock = make()\nexcept OSError:\n    lock = None",
            "lock",
            "try:\n    lock = make()\nexcept OSError:\n    lock = None",
        ),
        ("if ok:\n    conn = connect()", "conn", "if ok:\n    conn = connect()"),
    ],
)
def test_every_kind_of_binding(cell, name, code):
    found, _ = recipes([cell], name)
    assert found == {name: code}


def test_annotation_alone_binds_nothing():
    found, _ = recipes(["fh = open('a')", "fh: object"], "fh")
    assert found == {"fh": "fh = open('a')"}


def test_names_read_later_by_a_function_or_generator_are_not_needs():
    _, plan = recipes(
        ["fh = open('a')", "gen = (line for line in src if fh)", "def reader():\n    return fh.read()"],
        "fh",
        "gen",
        "reader",
    )
    assert plan.recipes["gen"].needs == () and plan.recipes["reader"].needs == ()


def test_a_chain_of_unpicklable_names_lists_its_needs():
    cells = ["fh = open('a')", "lines = (l.strip() for l in fh)", "pairs = zip(lines, lines)", "n = 3"]
    _, plan = recipes(cells, "fh", "lines", "pairs")
    assert plan.recipes["pairs"].needs == ("lines",)
    assert plan.recipes["lines"].needs == ("fh",)
    assert plan.recipes["fh"].needs == ()
    assert plan.meta() == {
        "recompute": {
            "fh": {"code": "fh = open('a')", "needs": []},
            "lines": {"code": "lines = (l.strip() for l in fh)", "needs": ["fh"]},
            "pairs": {"code": "pairs = zip(lines, lines)", "needs": ["lines"]},
        }
    }


def test_a_need_without_recipe_leaves_no_recipe():
    found, plan = recipes(["lines = (l for l in fh)"], "fh", "lines")
    assert found == {}
    assert "no cell run in this kernel assigns it" in plan.missing["fh"]
    assert plan.missing["lines"] == "its statement reads 'fh', which cannot be pickled or rebuilt"


def test_a_need_rebound_since_leaves_no_recipe():
    found, plan = recipes(["fh = open('a')", "lines = (l for l in fh)", "fh = open('b')"], "fh", "lines")
    assert found == {"fh": "fh = open('b')"}
    assert plan.missing["lines"] == "its statement read 'fh', which cannot be pickled and was rebound since"


def test_a_picklable_name_rebound_since_is_named_in_the_warning():
    _, plan = recipes(["path = 'a.txt'", "fh = open(path)", "path = 'b.txt'"], "fh")
    assert plan.recipes["fh"].stale == ("path",)
    [line] = plan.warnings({"fh": "cannot pickle '_io.TextIOWrapper' object"})
    assert line == (
        "kernelhop: variable 'fh' is rebuilt on the runtime by re-running: fh = open(path) (it cannot be pickled: "
        "cannot pickle '_io.TextIOWrapper' object; it reads 'path', which was rebound since: the value it has now "
        "is used)"
    )


def test_warnings_show_the_code_or_why_there_is_none():
    _, plan = recipes(["fh = open('log.txt', 'w')", "with open('a') as src:\n    pass"], "fh", "src", "lock")
    lines = plan.warnings({"fh": "F", "src": "S", "lock": "cannot pickle '_thread.lock' object"})
    assert lines[0] == (
        "kernelhop: variable 'fh' is rebuilt on the runtime by re-running: fh = open('log.txt', 'w') "
        "(it cannot be pickled: F)"
    )
    assert lines[1].startswith("kernelhop: variable 'lock' stays local: cannot pickle '_thread.lock' object; ")
    assert "not rebuilt on the runtime (no cell run in this kernel assigns it" in lines[1]
    assert lines[2] == (
        "kernelhop: variable 'src' is rebuilt on the runtime by re-running (it cannot be pickled: S):\n"
        "    with open('a') as src:\n        pass"
    )


def test_names_never_bound_in_a_recorded_cell_get_no_recipe():
    found, plan = recipes(["exec('lock = threading.Lock()')", "import helpers\nhelpers.setup(globals())"], "lock")
    assert found == {} and "exec" in plan.missing["lock"]


def test_a_deleted_name_gets_no_recipe():
    found, plan = recipes(["fh = open('a')", "del fh"], "fh")
    assert found == {} and plan.missing["fh"] == "the last cell statement naming it deletes it"


def test_cells_that_never_ran_or_stopped_early():
    cells = ["fh = open('a')", "fh = open(", "fh = open('b')\n1 / 0\nfh = open('c')"]
    found, _ = recipes(cells, "fh", stopped_at={3: 2})
    assert found == {"fh": "fh = open('b')"}
    found, _ = recipes(cells, "fh", stopped_at={3: 0})
    assert found == {"fh": "fh = open('a')"}


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    ip.reset(new_session=False)
    # A stand-in for kernelhop's %%gpu: only the transformed source matters here, never the body's effect.
    ip.register_magic_function(lambda line, cell: None, "cell", "gpu")
    log = CellLog(ip)
    yield ip, log
    log.close()
    ip.reset(new_session=False)


def test_gpu_cells_bodies_are_never_taken_as_local_bindings(shell, tmp_path):
    ip, log = shell
    path = tmp_path / "a.txt"
    path.write_text("x\n")
    assert ip.run_cell(f"fh = open({str(path)!r})", store_history=True).success
    assert ip.run_cell("%%gpu h100\nfh = open('/elsewhere')\ngen = (i for i in range(3))", store_history=True).success
    try:
        plan = log.plan(["fh", "gen"])
        assert {n: r.code for n, r in plan.recipes.items()} == {"fh": f"fh = open({str(path)!r})"}
        assert "no cell run in this kernel assigns it" in plan.missing["gen"]
    finally:
        ip.user_ns["fh"].close()


def test_the_log_drops_what_a_failed_cell_never_ran(shell):
    ip, log = shell
    ip.run_cell("import threading\nlock = threading.Lock()", store_history=True)
    assert not ip.run_cell("x = 1\nraise ValueError\nlock = threading.RLock()", store_history=True).success
    assert not ip.run_cell("lock = (", store_history=True).success
    plan = log.plan(["lock"])
    assert plan.recipes["lock"].code == "lock = threading.Lock()"
    # Magics reach the finder as IPython's calls: %time's statement is opaque, so the older recipe stays.
    ip.run_cell("%time lock = threading.RLock()", store_history=True)
    assert log.plan(["lock"]).recipes["lock"].code == "lock = threading.Lock()"
