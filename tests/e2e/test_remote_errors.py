"""A cell that raises on the runtime raises here as the remote exception's own class (and as RemoteCellError), with
the remote traceback: `except ValueError`, the error message's `ename` and nbclient's report see the remote type."""

from __future__ import annotations

import re

import nbformat
import pytest
from kernelhop_testing import Kernel, Stack
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def test_except_clause_catches_the_remote_class(kernel: Kernel) -> None:
    code = (
        "from kernelhop.client.hop import RemoteCellError\n"
        "try:\n"
        "    get_ipython().run_cell_magic('gpu', 'h100 -q', 'y = 1\\nraise ValueError(\"bad value\")')\n"
        "except ValueError as e:\n"
        "    caught = (type(e).__name__, str(e), isinstance(e, RemoteCellError), e.gpu_class)\n"
    )
    run = kernel.run(code)
    assert run.status == "ok", run.error_text
    assert kernel.value("caught") == "('ValueError', 'bad value', True, 'h100')"
    assert kernel.value("y") == "1"  # what the cell did before raising still came home


def test_error_message_names_the_remote_class_with_the_remote_traceback(kernel: Kernel) -> None:
    run = kernel.run("%%gpu h100 -q\n{}['missing']")
    assert run.status == "error"
    [error] = run.outputs("error")
    assert (error["ename"], error["evalue"]) == ("KeyError", "'missing'")
    assert (run.reply["content"]["ename"], run.reply["content"]["evalue"]) == ("KeyError", "'missing'")
    remote_traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
    assert "{}['missing']" in remote_traceback  # the remote traceback, with the cell's line
    # A library's exception whose __init__ takes other arguments than a message.
    run = kernel.run("%%gpu h100 -q\nimport subprocess\nraise subprocess.CalledProcessError(3, ['false'])")
    [error] = run.outputs("error")
    assert error["ename"] == "CalledProcessError"
    assert error["evalue"] == "Command '['false']' returned non-zero exit status 3."


def test_notebook_exception_classes(kernel: Kernel) -> None:
    setup = kernel.run(
        "from kernelhop.client.hop import RemoteCellError\n"
        "class NotebookError(Exception):\n"
        "    def __init__(self, code, detail):\n"
        "        super().__init__(f'{code}: {detail}')\n"
        "        self.code = code\n"
        "class Sealed(Exception):\n"
        "    def __init_subclass__(cls, **kwargs):\n"
        "        raise TypeError('Sealed is final')\n"
        "def hop(code):\n"
        "    try:\n"
        "        get_ipython().run_cell_magic('gpu', 'h100 -q', code)\n"
        "    except Exception as e:\n"
        "        return e\n"
    )
    assert setup.status == "ok", setup.error_text
    assert kernel.run("e = hop('raise NotebookError(7, \"no luck\")')").status == "ok"
    assert kernel.value("(isinstance(e, NotebookError), isinstance(e, RemoteCellError), str(e))") == (
        "(True, True, '7: no luck')"
    )
    # A class that refuses subclasses arrives as RemoteCellError alone, and its traceback says why.
    assert kernel.run("e = hop('raise Sealed(\"x\")')").status == "ok"
    assert kernel.value("(type(e).__name__, isinstance(e, Sealed), e.ename)") == "('RemoteCellError', False, 'Sealed')"
    note = kernel.value("e._render_traceback_()[-1]")
    assert "raised as RemoteCellError, not as __main__:Sealed: TypeError: Sealed is final" in note
    # A class made inside a function cannot be found by name here: RemoteCellError, saying so.
    assert (
        kernel.run("e = hop('def f():\\n    class Local(Exception): pass\\n    raise Local(1)\\nf()')").status == "ok"
    )
    assert kernel.value("(type(e).__name__, e.ename)") == "('RemoteCellError', 'Local')"
    assert "not as __main__:f.<locals>.Local" in kernel.value("e._render_traceback_()[-1]")


def test_nbclient_reports_the_remote_class(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    cells = ["%load_ext kernelhop", "%%gpu h100\nraise ValueError('bad value')", "after = 1"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    with pytest.raises(CellExecutionError) as failed:
        NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    assert (failed.value.ename, failed.value.evalue) == ("ValueError", "bad value")
    # A `raises-exception` tag lets the notebook go on past the expected error.
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.cells[1].metadata["tags"] = ["raises-exception"]
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    assert [o["ename"] for o in nb.cells[1].outputs if o["output_type"] == "error"] == ["ValueError"]
    assert nb.cells[2].execution_count is not None
