"""Unpicklable variables rebuilt on the runtime by re-running the statement that made them
(kernelhop/client/recompute.py), end to end: real ipykernel, gateway, runtime and worker. A recipe that opens a file of the kernel's working directory
opens it on the runtime in the copy of that directory the hop carries (the sandboxed worker sees nothing else of this
host), so these tests keep their files there, by relative path."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

from kernelhop_testing import Kernel


def ok(kernel: Kernel, code: str):
    execution = kernel.run(code)
    assert execution.status == "ok", execution.error_text
    return execution


def test_a_generator_is_rebuilt_remotely_and_the_local_one_is_untouched(kernel: Kernel) -> None:
    ok(kernel, "gen = (i * i for i in range(5))")
    ok(kernel, "before = id(gen)")
    remote = ok(kernel, "%%gpu h100\nprint(next(gen))\nprint(next(gen))")
    assert remote.stream_text("stdout").split() == ["0", "1"]
    # A later statement that read it is replayed too (id() could have been anything that advanced it).
    assert (
        "kernelhop: variable 'gen' is rebuilt on the runtime by re-running (it cannot be pickled: cannot pickle "
        "'generator' object):\n    gen = (i * i for i in range(5))\n    before = id(gen)\n"
    ) in remote.stream_text("stderr")
    # Each hop rebuilds it afresh from the kernel's recipe, also on a warm worker that kept the last one.
    again = ok(kernel, "%%gpu h100\nprint(next(gen))")
    assert again.stream_text("stdout").split() == ["0"]
    assert kernel.value("(id(gen) == before, next(gen))") == "(True, 0)"


def test_an_open_file_is_reopened_remotely(kernel: Kernel) -> None:
    (Path(kernel.cwd) / "lines.txt").write_text("first\nsecond\n")
    ok(kernel, "fh = open('lines.txt')\nkept = id(fh)")
    remote = ok(kernel, "%%gpu h100\nprint(fh.readline().strip())\nprint(fh.readline().strip())\nname = fh.name")
    assert remote.stream_text("stdout").split() == ["first", "second"]
    assert kernel.value("name") == repr("lines.txt")  # what the cell made from it came home
    assert kernel.value("(id(fh) == kept, fh.readline())") == "(True, 'first\\n')"


def test_a_with_blocks_other_names_are_left_alone(kernel: Kernel) -> None:
    path = "head.txt"
    (Path(kernel.cwd) / path).write_text("head line\n")
    ok(kernel, "import threading\nlock = threading.Lock()")
    ok(kernel, f"with lock, open({path!r}) as src:\n    head = src.readline()\nsrc = open({path!r})")
    ok(kernel, "head = 'changed here'")
    remote = ok(kernel, "%%gpu h100\nwith lock:\n    held = lock.locked()\nprint(head)\nprint(src.readline())")
    err = remote.stream_text("stderr")
    assert f"    with lock, open({path!r}) as src:\n        head = src.readline()" in err
    # Replaying the `with` (a use of the lock) did not bring back its `head`: it stayed what the kernel sent.
    assert remote.stream_text("stdout").split() == ["changed", "here", "head", "line"]
    assert kernel.value("(held, lock.locked(), head)") == "(True, False, 'changed here')"


def test_a_recipe_that_fails_remotely_leaves_a_placeholder_naming_it(kernel: Kernel, tmp_path: Path) -> None:
    path = tmp_path / "gone.txt"
    path.write_text("only here\n")
    ok(kernel, f"import os\nfh = open({str(path)!r})\nlines = (line for line in fh)\nn = 1\nids = (id(fh), id(lines))")
    # The path goes away; the kernel's open file still reads it, the runtime cannot open it again.
    ok(kernel, f"os.remove({str(path)!r})")
    failed = kernel.run("%%gpu h100\nn = 2\nfh.read()")
    assert failed.status == "error"
    opened = f"re-running `fh = open({str(path)!r})` failed: FileNotFoundError"
    assert f"kernelhop: variable 'fh' could not be rebuilt on the runtime: {opened}" in failed.stream_text()
    assert "'lines'" not in failed.stream_text()  # the cell does not reach it
    text = failed.error_text
    assert "UnavailableVariableError" in text and "variable 'fh' (_io.TextIOWrapper) is not available here" in text
    assert opened in text
    touched = kernel.run("%%gpu h100\nnext(lines)")
    assert f"kernelhop: variable 'lines' could not be rebuilt on the runtime: {opened}" in touched.stream_text()
    assert touched.status == "error" and "variable 'lines' (builtins.generator) is not available here" in (
        touched.error_text
    )
    # What the cell changed before raising came home; the unpicklable names are the kernel's own, untouched.
    assert kernel.value("(n, (id(fh), id(lines)) == ids, next(lines))") == "(2, True, 'only here\\n')"


def test_a_variable_without_recipe_stays_a_placeholder(kernel: Kernel) -> None:
    ok(kernel, "import threading\nexec('made = threading.Lock()')\nglobals().update(given=threading.Lock())")
    hop = kernel.run("%%gpu h100\ngiven.acquire()")
    warnings = hop.stream_text("stderr")
    assert "kernelhop: variable 'given' stays local: cannot pickle '_thread.lock' object; it is not rebuilt" in (
        warnings
    )
    assert "'made'" not in warnings  # the cell does not reach it
    assert hop.status == "error" and "variable 'given' (_thread.lock) is not available here" in hop.error_text
    touched = kernel.run("%%gpu h100\nwith made:\n    pass")
    assert touched.status == "error" and "variable 'made' (_thread.lock) is not available here" in touched.error_text
    assert kernel.value("(made.locked(), given.locked())") == "(False, False)"


def test_a_binding_hidden_in_a_magic_is_replayed_by_its_text(kernel: Kernel) -> None:
    # %time's statement binds nothing the parser sees, but its text names `lock`: it is replayed after Lock().
    ok(kernel, "import threading\nlock = threading.Lock()")
    ok(kernel, "%time lock = threading.RLock()")
    hop = ok(kernel, "%%gpu h100\nprint(type(lock).__name__)")
    assert hop.stream_text("stdout") == "RLock\n"


def test_a_stale_recipe_is_caught_by_the_type_check(kernel: Kernel, tmp_path: Path) -> None:
    # A binding the history cannot show (a script run in the namespace): the recipe found is the older Lock().
    script = tmp_path / "setup.py"
    script.write_text("import threading\nlock = threading.RLock()\n")
    ok(kernel, "import threading\nlock = threading.Lock()")
    ok(kernel, f"%run -i {script}")
    hop = kernel.run("%%gpu h100\nlock.acquire()")
    assert "variable 'lock' could not be rebuilt on the runtime: its recipe made 'lock' a _thread.lock" in (
        hop.stream_text()
    )
    assert hop.status == "error" and "variable 'lock' (_thread.RLock) is not available here" in hop.error_text


def test_a_recipe_runs_only_for_a_name_the_cell_reaches(kernel: Kernel) -> None:
    # Each hop once re-ran every recipe, and warned about every unpicklable name, whatever the cell used.
    ok(kernel, "import threading\ngen = (i for i in range(3))\nlock = threading.Lock()")
    hop = ok(kernel, "%%gpu h100\nx = 1")
    assert "gen" not in hop.stream_text("stderr") and "lock" not in hop.stream_text("stderr"), hop.stream_text()
    assert kernel.value("x") == "1"


def test_a_closed_file_is_never_rebuilt_and_its_file_never_rewritten(kernel: Kernel) -> None:
    # The seen case: the recipe of `f` re-ran the `with` on the runtime and wrote the current `data` over the file
    # (here, in the copy of the working directory, whose changes come home).
    path = Path(kernel.cwd) / "data.pickle"
    ok(kernel, "import pickle\ndata = {'v': 1}\nwith open('data.pickle', 'wb') as f:\n    pickle.dump(data, f)")
    ok(kernel, "data = {'v': 2}")
    written = path.read_bytes()
    hop = kernel.run(f"%%gpu h100\nprint(f.closed)")
    assert hop.status == "error" and "variable 'f' (_io.BufferedWriter) is not available here" in hop.error_text
    assert "variable 'f' stays local" in hop.stream_text("stderr")
    assert "(it is a closed file: a recipe would make a live one, not the kernel's)" in hop.stream_text("stderr")
    forced = kernel.run(f"%%gpu h100 --rebuild f\nprint(f.closed)")
    assert forced.status == "error"
    assert "opens a file for writing ('wb'): a hop never does that on its own" in forced.stream_text("stderr")
    loaded = ok(kernel, "%%gpu h100\nwith open('data.pickle', 'rb') as g:\n    print(pickle.load(g))")
    assert loaded.stream_text("stdout") == "{'v': 1}\n"
    assert path.read_bytes() == written == pickle.dumps({"v": 1})


def test_a_hash_object_is_rebuilt_with_its_updates(kernel: Kernel) -> None:
    ok(kernel, "import hashlib\nm = hashlib.sha256()")
    ok(kernel, "m.update(b'a')")
    ok(kernel, "%%gpu h100\nm.update(b'b')\nres = m.hexdigest()")
    assert kernel.value("res") == repr(hashlib.sha256(b"ab").hexdigest())
    # The kernel's own object is untouched by the remote update.
    assert kernel.value("m.hexdigest()") == repr(hashlib.sha256(b"a").hexdigest())


def test_an_update_that_cannot_be_followed_leaves_a_placeholder(kernel: Kernel) -> None:
    ok(kernel, "import hashlib\nm = hashlib.sha256()\ndata = b'a'")
    ok(kernel, "m.update(data)")
    ok(kernel, "data = b'other'")
    hop = kernel.run("%%gpu h100\nres = m.hexdigest()")
    assert hop.status == "error" and "variable 'm' (_hashlib.HASH) is not available here" in hop.error_text
    assert "it reads 'data', which was rebound since" in hop.stream_text("stderr")


def test_a_live_widget_never_comes_home_from_its_recipe(kernel: Kernel) -> None:
    ok(kernel, "import ipywidgets as widgets\nw = widgets.IntSlider(value=3)\nkept = (id(w), w.model_id)")
    hop = ok(kernel, "%%gpu h100\nv = w.value\nw.value = 7")
    assert "variable 'w' is rebuilt on the runtime" in hop.stream_text("stderr")
    assert kernel.value("(v, (id(w), w.model_id) == kept, w.value)") == "(3, True, 3)"


def test_a_slow_cell_is_never_re_run_unless_forced(kernel: Kernel) -> None:
    ok(kernel, "import os\nos.environ['KERNELHOP_RECIPE_MAX_S'] = '0.05'")
    ok(kernel, "import time\ngen = (i for i in range(3))\ntime.sleep(0.2)")
    hop = kernel.run("%%gpu h100\nprint(next(gen))")
    assert hop.status == "error" and "variable 'gen' (builtins.generator) is not available here" in hop.error_text
    assert "over the 0.05 s bound on what a hop re-runs" in hop.stream_text("stderr")
    forced = ok(kernel, "%%gpu h100 --rebuild gen\nprint(next(gen))")
    assert forced.stream_text("stdout") == "0\n"
    assert "--rebuild overrode: its cells took" in forced.stream_text("stderr")


def test_an_unpicklable_value_made_remotely_stays_there_and_is_warned_about_once(kernel: Kernel) -> None:
    first = ok(kernel, "%%gpu h100\ngen = (i for i in range(3))")
    assert "kernelhop: variable 'gen' did not come home" in first.stream_text("stderr")
    again = ok(kernel, "%%gpu h100\nprint(next(gen))")
    assert again.stream_text("stdout") == "0\n"
    assert "gen" not in again.stream_text("stderr")
    ok(kernel, "%%gpu h100\ndel gen")
    gone = ok(kernel, "%%gpu h100\nprint('gen' in globals())")
    assert gone.stream_text("stdout") == "False\n"
