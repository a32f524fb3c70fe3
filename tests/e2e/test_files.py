"""The kernel's working directory travels with a hop and what the cell does there comes home (kernelhop/client/files.py,
kernelhop_worker/workdir.py), end to end: a real ipykernel in a notebook directory, gateway, runtime and worker.
The worker runs in a directory of its own, laid out from the runtime's cache, so these cells see the notebook's files
only because they travelled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kernelhop_testing import Kernel, Stack, local_distribution


def ok(kernel: Kernel, code: str):
    execution = kernel.run(code)
    assert execution.status == "ok", execution.error_text + execution.stream_text("stderr")
    return execution


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    """A notebook directory: a CSV, the notebook's own module, a subfolder, and things that must not travel."""
    root = tmp_path / "nb"
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (root / "data" / "raw" / "huge.bin").write_bytes(b"\0" * 1000)
    (root / "utils.py").write_text(
        "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n"
        "def total(rows):\n    return sum(int(a) + int(b) for a, b in rows)\n"
    )
    (root / "lib").mkdir()
    (root / "lib" / "helpers.py").write_text("GREETING = 'from lib'\n")
    (root / ".kernelhopignore").write_text("data/raw/\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


@pytest.fixture
def nb_kernel(stack: Stack, notebook: Path, make_kernel) -> Kernel:
    return make_kernel_in(make_kernel, stack, notebook)


def make_kernel_in(make_kernel, stack: Stack, cwd: Path, **env: str) -> Kernel:
    kernel = make_kernel(stack.env(**env))
    # make_kernel starts in a directory of its own; this one's cells run in the notebook's.
    ok(kernel, f"import os\nos.chdir({str(cwd)!r})")
    return kernel


def test_a_cell_reads_the_csv_imports_utils_and_its_result_file_comes_home(nb_kernel: Kernel, notebook: Path) -> None:
    ok(nb_kernel, "import sys\nsys.path.append('lib')\nimport utils\np = utils.Point(1, 2)")
    remote = ok(
        nb_kernel,
        "%%gpu h100\n"
        "import csv, os, helpers\n"
        "rows = list(csv.reader(open('data/train.csv')))[1:]\n"
        "print('total', utils.total(rows), p.x + p.y, helpers.GREETING)\n"
        f"print('cwd differs', os.getcwd() != {str(notebook)!r})\n"
        "print('raw', os.path.exists('data/raw'), 'git', os.path.exists('.git'))\n"
        "os.makedirs('out', exist_ok=True)\n"
        "open('out/result.txt', 'w').write(f'sum={utils.total(rows)}')\n"
        "q = utils.Point(5, 6)\n",
    )
    out = remote.stream_text("stdout")
    err = remote.stream_text("stderr")
    assert "total 10 3 from lib" in out
    # The cell ran in the runtime's own copy, without what .kernelhopignore and the defaults leave out.
    assert "cwd differs True" in out
    assert "raw False git False" in out
    assert "not sent to the runtime (ignored): .git/, data/raw/" in err
    assert (notebook / "out" / "result.txt").read_text() == "sum=10"
    assert "files from the cell on h100: wrote out/result.txt" in err
    # An object of the notebook's own module went there and came back as one of the kernel's own module.
    assert nb_kernel.value("(type(q) is utils.Point, q.x, type(p) is utils.Point)") == "(True, 5, True)"
    assert "stays in the kernel" not in err


def test_a_second_hop_moves_only_the_changed_file_and_deletions_come_home(nb_kernel: Kernel, notebook: Path) -> None:
    ok(nb_kernel, "%%gpu h100\nopen('a.txt', 'w').write('a')")
    assert (notebook / "a.txt").read_text() == "a"
    (notebook / "data" / "train.csv").write_text("x,y\n10,20\n")
    remote = ok(nb_kernel, "%%gpu h100\nimport os\nprint(open('data/train.csv').read().split()[1])\nos.remove('a.txt')")
    assert remote.stream_text("stdout").split() == ["10,20"]
    assert not (notebook / "a.txt").exists()
    assert "deleted a.txt" in remote.stream_text("stderr")


def test_a_file_changed_here_while_the_cell_ran_is_a_conflict_not_overwritten(
    nb_kernel: Kernel, notebook: Path
) -> None:
    target = notebook / "notes.txt"
    target.write_text("v1")
    # The cell changes the file on the runtime while it changes here too: the kernel's side writes it once the
    # tree has been sent, as another process would while the cell runs (the sandboxed cell cannot reach this disk).
    ok(
        nb_kernel,
        "import kernelhop.client.hop as _h\n"
        "_h.Hopper._test_run = _h.Hopper._run\n"
        "def _edit_then_run(self, *a, **k):\n"
        "    import pathlib\n"
        f"    pathlib.Path({str(target)!r}).write_text('local edit')\n"
        "    return self._test_run(*a, **k)\n"
        "_h.Hopper._run = _edit_then_run\n"
        "del _h, _edit_then_run",
    )
    try:
        remote = ok(nb_kernel, "%%gpu h100\nopen('notes.txt', 'w').write('remote edit')")
    finally:
        ok(nb_kernel, "import kernelhop.client.hop as _h\n_h.Hopper._run = _h.Hopper._test_run\ndel _h")
    assert target.read_text() == "local edit"
    assert (notebook / "notes.txt.kernelhop-remote").read_text() == "remote edit"
    assert "conflict: notes.txt changed here while the cell ran on h100" in remote.stream_text("stderr")


def test_an_oversize_tree_is_refused_naming_the_largest_file(
    stack: Stack, notebook: Path, make_kernel
) -> None:
    (notebook / "model.ckpt").write_bytes(os.urandom(300_000))
    kernel = make_kernel_in(make_kernel, stack, notebook, KERNELHOP_FILES_MAX_BYTES="200000")
    ok(kernel, "x = 1")
    failed = kernel.run("%%gpu h100\nx = 2")
    assert failed.status == "error"
    text = failed.error_text
    assert "over the 195.3 KiB a hop carries" in text
    assert "Largest: model.ckpt (293.0 KiB)" in text
    assert ".kernelhopignore" in text and "--no-files" in text
    assert kernel.value("x") == "1"
    # Left out, it goes.
    (notebook / ".kernelhopignore").write_text("data/raw/\n*.ckpt\n")
    ok(kernel, "%%gpu h100\nx = 3")
    assert kernel.value("x") == "3"


def test_no_files_runs_without_the_directory(nb_kernel: Kernel, notebook: Path) -> None:
    remote = ok(nb_kernel, "%%gpu h100 --no-files\nimport os\nprint(os.path.exists('data/train.csv'))")
    assert remote.stream_text("stdout").split() == ["False"]


def test_a_cell_cannot_make_the_kernel_write_through_a_link_out_of_the_directory(
    nb_kernel: Kernel, notebook: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (notebook / "link").symlink_to(outside)
    # The link is not sent; the cell makes a real directory of that name, and a file in it.
    remote = ok(
        nb_kernel,
        "%%gpu h100\nimport os\nprint(os.path.exists('link'))\nos.makedirs('link')\n"
        "open('link/planted.txt', 'w').write('x')",
    )
    err = remote.stream_text("stderr")
    assert remote.stream_text("stdout").split() == ["False"]
    assert f"symlink link -> {outside} points outside the working directory; it is not sent" in err
    assert "link/planted.txt from the cell is not written: its directory here leads out of" in err
    assert list(outside.iterdir()) == []


def test_a_package_the_runtime_lacks_is_named_before_the_cell_runs(nb_kernel: Kernel, tmp_path: Path) -> None:
    # A distribution on the kernel's sys.path only (outside the working directory, so nothing of it travels).
    site = local_distribution(tmp_path / "kernel-only-site", "kh-only-pkg", "1.2.3")
    ok(nb_kernel, f"import sys\nsys.path.insert(0, {str(site)!r})\nimport kh_only_pkg")
    remote = ok(nb_kernel, "%%gpu h100\nprint('ran')")
    err = remote.stream_text("stderr")
    assert "this runtime's Python environment differs from the kernel's" in err
    assert "kh-only-pkg: kernel 1.2.3, runtime not installed" in err
    both = remote.stream_text()
    assert both.index("kh-only-pkg") < both.index("ran")
