"""The recipe finder (client/recompute.py): which statement rebuilds an unpicklable variable on the runtime."""

import pytest
from IPython.core.inputtransformer2 import TransformerManager
from IPython.core.interactiveshell import InteractiveShell

from kernelhop.client.recompute import CellLog, find_recipes


def recipes(cells, *names, stopped_at=None, durations=None, limit_s=1.0, **options):
    """The recipes (their statements joined) of ``names`` from ``cells``, each cell taking no time unless
    ``durations`` says otherwise."""
    timed = {i: 0.0 for i in range(len(cells) + 1)} if durations is None else durations
    plan = find_recipes(["", *cells], names, stopped_at, durations=timed, limit_s=limit_s, **options)
    return {n: "\n".join(plan.steps(n)) for n in plan.recipes}, plan


def test_the_most_recent_binding_is_the_recipe():
    found, _ = recipes(["fh = open('a.txt')", "x = 1\nfh = open('b.txt')", "x = 2"], "fh")
    assert found == {"fh": "fh = open('b.txt')"}


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
    assert plan.steps("gen") == ["gen = (line for line in src if fh)"]


def test_a_chain_of_unpicklable_names_lists_its_needs():
    cells = ["fh = open('a')", "lines = (l.strip() for l in fh)", "pairs = zip(lines, lines)", "n = 3"]
    _, plan = recipes(cells, "fh", "lines", "pairs")
    assert plan.recipes["pairs"].needs == ("lines", "fh")
    assert plan.recipes["lines"].needs == ("fh",)
    # fh's object is what `lines` and `pairs` read from, so its own recipe replays them too.
    assert plan.recipes["fh"].needs == () and len(plan.recipes["fh"].steps) == 3
    assert plan.meta() == {
        "recompute": {
            "steps": ["fh = open('a')", "lines = (l.strip() for l in fh)", "pairs = zip(lines, lines)"],
            "names": {"fh": [0, 1, 2], "lines": [0, 1, 2], "pairs": [0, 1, 2]},
        }
    }


def test_a_need_without_recipe_leaves_no_recipe():
    found, plan = recipes(["lines = (l for l in fh)"], "fh", "lines")
    assert found == {}
    assert "no cell run in this kernel assigns it" in plan.missing["fh"]
    assert plan.missing["lines"].startswith("it needs 'fh', which cannot be rebuilt: no cell run in this kernel")


def test_a_need_rebound_since_leaves_no_recipe():
    found, plan = recipes(["fh = open('a')", "lines = (l for l in fh)", "fh = open('b')"], "fh", "lines")
    assert found == {"fh": "fh = open('b')"}
    assert plan.missing["lines"] == "its statement read 'fh', which cannot be pickled and was rebound since"


def test_a_picklable_name_rebound_since_leaves_no_recipe_unless_forced():
    found, plan = recipes(["path = 'a.txt'", "fh = open(path)", "path = 'b.txt'"], "fh")
    assert found == {}
    assert plan.missing["fh"] == (
        "re-running would not give the kernel's object: it reads 'path', which was rebound since, so re-running "
        "would not make the same object"
    )
    found, plan = recipes(["path = 'a.txt'", "fh = open(path)", "path = 'b.txt'"], "fh", forced=["fh"])
    assert found == {"fh": "fh = open(path)"}
    [line] = plan.warnings({"fh": "cannot pickle '_io.TextIOWrapper' object"})
    assert line == (
        "kernelhop: variable 'fh' is rebuilt on the runtime by re-running: fh = open(path) (it cannot be pickled: "
        "cannot pickle '_io.TextIOWrapper' object; --rebuild overrode: re-running would not give the kernel's "
        "object: it reads 'path', which was rebound since, so re-running would not make the same object)"
    )


def test_warnings_show_the_code_or_why_there_is_none():
    _, plan = recipes(["fh = open('log.txt')", "with open('a') as src:\n    pass"], "fh", "src", "lock")
    lines = plan.warnings({"fh": "F", "src": "S", "lock": "cannot pickle '_thread.lock' object"})
    assert lines[0] == (
        "kernelhop: variable 'fh' is rebuilt on the runtime by re-running: fh = open('log.txt') "
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
        plan = log.plan(["fh", "gen"], limit_s=60)
        assert {n: plan.steps(n) for n in plan.recipes} == {"fh": [f"fh = open({str(path)!r})"]}
        assert "no cell run in this kernel assigns it" in plan.missing["gen"]
    finally:
        ip.user_ns["fh"].close()


def test_the_log_drops_what_a_failed_cell_never_ran(shell):
    ip, log = shell
    ip.run_cell("import threading\nlock = threading.Lock()", store_history=True)
    assert not ip.run_cell("x = 1\nraise ValueError\nlock = threading.RLock()", store_history=True).success
    assert not ip.run_cell("lock = (", store_history=True).success
    plan = log.plan(["lock"], limit_s=60)
    assert plan.steps("lock") == ["import threading\nlock = threading.Lock()".split("\n")[1]]
    # Magics reach the finder as IPython's calls: %time's statement binds nothing it can see, but its text names
    # `lock`, so it is replayed after the binding.
    ip.run_cell("%time lock = threading.RLock()", store_history=True)
    assert log.plan(["lock"], limit_s=60).steps("lock") == [
        "lock = threading.Lock()",
        "get_ipython().run_line_magic('time', 'lock = threading.RLock()')",
    ]


def test_only_names_in_reach_or_forced_are_planned():
    found, plan = recipes(["fh = open('a')", "gen = (i for i in range(3))"], "fh", "gen", targets={"x"})
    assert found == {} and plan.missing == {}
    found, _ = recipes(["fh = open('a')", "gen = (i for i in range(3))"], "fh", "gen", targets={"x"}, forced=["gen"])
    assert found == {"gen": "gen = (i for i in range(3))"}


def test_later_uses_are_replayed_in_order_through_aliases_functions_and_magics():
    import hashlib

    cells = [
        "import hashlib\nm = hashlib.sha256()",
        "m.update(b'a')",
        "n = len(b'unrelated')",
        "alias = m\nalias.update(b'b')\nalias = None",
        "alias = 0",
        "def feed():\n    m.update(b'c')",
        "feed()",
        "%time m.update(b'd')",
        "%%gpu h100\nm.update(b'remote only')",
    ]
    namespace = {"hashlib": hashlib, "m": hashlib.sha256(), "alias": 0, "n": 9}
    exec(cells[5], namespace)
    found, plan = recipes([TransformerManager().transform_cell(c) for c in cells], "m", namespace=namespace)
    assert found["m"].split("\n") == [
        "m = hashlib.sha256()",
        "m.update(b'a')",
        "alias = m",
        "alias.update(b'b')",
        "feed()",
        "get_ipython().run_line_magic('time', \"m.update(b'd')\")",
    ]


@pytest.mark.parametrize(
    ("cells", "why"),
    [
        (["data = b'a'", "m = make()", "m.update(data)", "data = b'b'"], "it reads 'data', which was rebound since"),
        (["m = make()", "seen = {}", "seen['m'] = m.digest()"], "would change 'seen', which is sent as it is"),
        (["m = make()", "globals()['m'].update(b'x')"], "`globals()['m'].update(b'x')` reaches the namespace"),
        (["m = make()", "with open('log', 'w') as fh:\n    fh.write(repr(m))"], "opens a file for writing ('w')"),
        (["m = make()", "Path('out.txt').write_text(m.hexdigest())"], "writes files (.write_text)"),
        (["m = make()", "df.to_csv(m.name)"], "writes files (.to_csv)"),
        (["from os import remove", "m = make()", "remove(m.name)"], "changes files (os.remove)"),
        (["import subprocess as sp", "m = sp.Popen(['ls'])"], "runs another program (subprocess.Popen)"),
        (["m = make()", "!echo {m}"], "runs a shell command (!)"),
        (["m = make()", "%%bash\necho $m\n"], "runs the magic %bash"),
        (["import socket", "m = socket.create_connection(('h', 80))"], "calls out over the network (socket."),
        (["m = open(path, mode)"], "opens a file for writing (a mode the analysis cannot read)"),
    ],
)
def test_a_recipe_that_is_not_exact_or_not_safe_is_refused(cells, why):
    parsed = [TransformerManager().transform_cell(c) for c in cells]
    found, plan = recipes(parsed, "m")
    assert found == {} and why in plan.missing["m"], plan.missing


def test_reading_files_is_safe():
    cells = ["m = open('a', 'rb')", "head = m.read(4) + Path('x').open().read() + gzip.open('f', 'rb').read()"]
    found, _ = recipes(cells, "m")
    assert found == {"m": "\n".join(cells)}


def test_a_use_in_a_cell_that_raised_leaves_no_recipe():
    found, plan = recipes(["m = make()", "m.update(b'a'); 1 / 0"], "m", stopped_at={2: 1})
    assert found == {} and "used it and raised part way through" in plan.missing["m"]


def test_dead_objects_get_no_recipe(tmp_path):
    import threading

    closed = open(tmp_path / "f", "w")
    closed.close()
    finished = (i for i in range(1))
    list(finished)
    ran = threading.Thread(target=lambda: None)
    ran.start()
    ran.join()
    cells = ["f = open('f', 'w')", "g = (i for i in range(1))", "t = threading.Thread(target=work)\nt.start()"]
    found, plan = recipes(cells, "f", "g", "t", namespace={"f": closed, "g": finished, "t": ran})
    assert found == {}
    assert plan.missing["f"] == "it is a closed file: a recipe would make a live one, not the kernel's"
    assert plan.missing["g"].startswith("it is a finished generator")
    assert plan.missing["t"].startswith("it is a thread that has run")
    # --rebuild overrides liveness, never the safety rule.
    found, plan = recipes(cells, "g", "f", namespace={"f": closed, "g": finished}, forced=["g", "f"])
    assert list(found) == ["g"] and "opens a file for writing" in plan.missing["f"]
    assert plan.recipes["g"].overrode == (
        "it is a finished generator: a recipe would make a live one, not the kernel's",
    )


def test_the_cost_bound_is_the_time_the_cells_ran():
    cells = ["gen = (i for i in range(3))", "x = next(gen)"]
    found, plan = recipes(cells, "gen", durations={1: 0.4, 2: 0.7}, limit_s=1.0)
    assert found == {} and plan.missing["gen"] == "its cells took 1.10 s, over the 1 s bound on what a hop re-runs"
    found, _ = recipes(cells, "gen", durations={1: 0.4, 2: 0.5}, limit_s=1.0)
    assert found == {"gen": "gen = (i for i in range(3))\nx = next(gen)"}
    found, plan = recipes(cells, "gen", durations={2: 0.1}, limit_s=1.0)
    assert found == {} and "ran before kernelhop was loaded" in plan.missing["gen"]


def test_the_log_times_each_cell(shell):
    ip, log = shell
    assert ip.run_cell("import time\ngen = (i for i in range(3))\ntime.sleep(0.2)", store_history=True).success
    plan = log.plan(["gen"], limit_s=0.1)
    assert plan.missing["gen"].startswith("its cells took 0.") and "over the 0.1 s bound" in plan.missing["gen"]
    assert "gen" in log.plan(["gen"], limit_s=60).recipes
