"""Unpicklable variables rebuilt on the runtime by re-running the statement that made them (kernelhop/recompute.py),
end to end: real ipykernel, gateway, runtime and worker. The runtime shares this machine's files, so a recipe that
opens a path opens the same file here."""

from __future__ import annotations

from pathlib import Path

from kernelhop.testing import Kernel


def ok(kernel: Kernel, code: str):
    execution = kernel.run(code)
    assert execution.status == "ok", execution.error_text
    return execution


def test_a_generator_is_rebuilt_remotely_and_the_local_one_is_untouched(kernel: Kernel) -> None:
    ok(kernel, "gen = (i * i for i in range(5))\nbefore = id(gen)")
    remote = ok(kernel, "%%gpu h100\nprint(next(gen))\nprint(next(gen))")
    assert remote.stream_text("stdout").split() == ["0", "1"]
    assert (
        "kernelhop: variable 'gen' is rebuilt on the runtime by re-running: gen = (i * i for i in range(5))"
        in remote.stream_text("stderr")
    )
    # Each hop rebuilds it afresh from the kernel's recipe, also on a warm worker that kept the last one.
    again = ok(kernel, "%%gpu h100\nprint(next(gen))")
    assert again.stream_text("stdout").split() == ["0"]
    assert kernel.value("(id(gen) == before, next(gen))") == "(True, 0)"


def test_an_open_file_is_reopened_remotely(kernel: Kernel, tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("first\nsecond\n")
    ok(kernel, f"fh = open({str(path)!r})\nkept = id(fh)")
    remote = ok(kernel, "%%gpu h100\nprint(fh.readline().strip())\nprint(fh.readline().strip())\nname = fh.name")
    assert remote.stream_text("stdout").split() == ["first", "second"]
    assert kernel.value("name") == repr(str(path))  # what the cell made from it came home
    assert kernel.value("(id(fh) == kept, fh.readline())") == "(True, 'first\\n')"


def test_a_lock_is_rebuilt_and_a_with_blocks_other_names_are_left_alone(kernel: Kernel, tmp_path: Path) -> None:
    path = tmp_path / "head.txt"
    path.write_text("head line\n")
    ok(
        kernel,
        f"import threading\nlock = threading.Lock()\nwith open({str(path)!r}) as src:\n    head = src.readline()",
    )
    ok(kernel, "head = 'changed here'")
    remote = ok(kernel, "%%gpu h100\nwith lock:\n    held = lock.locked()\nprint(head)\nprint(src.closed)")
    err = remote.stream_text("stderr")
    assert "kernelhop: variable 'lock' is rebuilt on the runtime by re-running: lock = threading.Lock()" in err
    assert f"with open({str(path)!r}) as src:\n        head = src.readline()" in err
    # Re-running the `with` rebuilt src, but `head` stayed what the kernel had sent.
    assert remote.stream_text("stdout").split() == ["changed", "here", "True"]
    assert kernel.value("(held, lock.locked(), head)") == "(True, False, 'changed here')"


def test_a_recipe_that_fails_remotely_leaves_a_placeholder_naming_it(kernel: Kernel, tmp_path: Path) -> None:
    path = tmp_path / "gone.txt"
    path.write_text("only here\n")
    ok(kernel, f"import os\nfh = open({str(path)!r})\nlines = (line for line in fh)\nn = 1\nids = (id(fh), id(lines))")
    # The path goes away; the kernel's open file still reads it, the runtime cannot open it again.
    ok(kernel, f"os.remove({str(path)!r})")
    failed = kernel.run("%%gpu h100\nn = 2\nfh.read()")
    assert failed.status == "error"
    assert "kernelhop: variable 'fh' could not be rebuilt on the runtime: FileNotFoundError" in failed.stream_text()
    assert "variable 'lines' could not be rebuilt on the runtime: it needs 'fh', which could not be rebuilt" in (
        failed.stream_text()
    )
    text = failed.error_text
    assert "UnavailableVariableError" in text and "variable 'fh' (_io.TextIOWrapper) is not available here" in text
    assert f"re-running `fh = open({str(path)!r})` failed: FileNotFoundError" in text
    touched = kernel.run("%%gpu h100\nnext(lines)")
    assert touched.status == "error" and "variable 'lines' (builtins.generator) is not available here" in (
        touched.error_text
    )
    # What the cell changed before raising came home; the unpicklable names are the kernel's own, untouched.
    assert kernel.value("(n, (id(fh), id(lines)) == ids, next(lines))") == "(2, True, 'only here\\n')"


def test_a_variable_without_recipe_stays_a_placeholder(kernel: Kernel) -> None:
    ok(kernel, "import threading\nexec('made = threading.Lock()')\nglobals().update(given=threading.Lock())")
    hop = kernel.run("%%gpu h100\ngiven.acquire()")
    warnings = hop.stream_text("stderr")
    for name in ("made", "given"):
        assert f"kernelhop: variable {name!r} stays local: cannot pickle '_thread.lock' object; it is not rebuilt" in (
            warnings
        )
    assert hop.status == "error" and "variable 'given' (_thread.lock) is not available here" in hop.error_text
    touched = kernel.run("%%gpu h100\nwith made:\n    pass")
    assert touched.status == "error" and "variable 'made' (_thread.lock) is not available here" in touched.error_text
    assert kernel.value("(made.locked(), given.locked())") == "(False, False)"


def test_a_stale_recipe_is_caught_by_the_type_check(kernel: Kernel) -> None:
    # %time hides its statement from the history's parser, so the recipe found is the older Lock().
    ok(kernel, "import threading\nlock = threading.Lock()")
    ok(kernel, "%time lock = threading.RLock()")
    hop = kernel.run("%%gpu h100\nlock.acquire()")
    assert "variable 'lock' could not be rebuilt on the runtime: it made 'lock' a _thread.lock" in hop.stream_text()
    assert hop.status == "error" and "variable 'lock' (_thread.RLock) is not available here" in hop.error_text
