import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import kernelhop
from kernelhop.magics.gpu import GpuMagics


@pytest.fixture
def ip():
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    return shell


@pytest.fixture
def calls(ip, monkeypatch):
    """Register the magics with hop() recorded instead of run."""
    magics = GpuMagics(ip)
    seen = []
    monkeypatch.setattr(magics.hopper, "hop", lambda *a, **kw: seen.append((a, kw)))
    ip.register_magics(magics)
    return seen


def test_cell_magic_help_shows_arguments(ip, calls):
    doc = ip.find_cell_magic("gpu").__doc__
    assert "%%gpu [--timeout SECONDS] [-q] [--eager] [--rebuild NAME] [--no-files]" in doc
    assert "--timeout SECONDS" in doc and "-q, --quiet" in doc and "--eager" in doc and "--no-files" in doc
    assert "--no-packages" in doc
    assert "Run this cell on a pooled GPU" in doc
    assert "(%gpu without a cell" in doc
    # The rules a recipe follows, and the flag that forces one.
    assert "--rebuild NAME" in doc and "KERNELHOP_RECIPE_MAX_S" in doc and "never one that writes files" in doc


def test_parses_class_timeout_quiet_and_eager(ip, calls):
    ip.run_cell_magic("gpu", "h100 --timeout 90 -q", "x = 1\n")
    defaults = {"timeout_s": 90.0, "quiet": True, "eager": False, "rebuild": (), "files": True, "packages": True}
    assert calls == [(("h100", "x = 1\n"), defaults)]
    line = "a100 --eager --rebuild fh --rebuild gen --rebuild fh --no-files --no-packages"
    ip.run_cell_magic("gpu", line, "y = 2")
    options = {"timeout_s": None, "quiet": False, "eager": True, "rebuild": ("fh", "gen"), "files": False}
    options["packages"] = False
    assert calls[-1] == (("a100", "y = 2"), options)


@pytest.mark.parametrize(
    ("line", "cell", "message"),
    [
        ("", "x = 1", "CLASS"),
        ("h100 --rebuild 2x", "x = 1", "--rebuild takes a variable name, got '2x'"),
        ("h100 --timeout soon", "x = 1", "invalid float value"),
        ("h100 --timeout -5", "x = 1", "--timeout must be a positive number"),
        ("h100 extra", "x = 1", "unrecognized arguments"),
        ("h100", "   \n", "the cell is empty"),
    ],
)
def test_usage_errors(ip, calls, line, cell, message):
    with pytest.raises(UsageError, match=message):
        ip.run_cell_magic("gpu", line, cell)
    assert calls == []


def test_line_magic_lists_classes(ip, gateway_env, capsys):
    ip.register_magics(GpuMagics(ip))
    ip.run_line_magic("gpu", "")
    out = capsys.readouterr().out
    assert f"GPU classes at {gateway_env.url}:" in out
    assert "h100  1 runtime, 0/2 busy, 0 queued  (simulated on CPU)" in out


def test_line_magic_with_no_runtimes_says_how_to_start_one(ip, gateway_env, capsys):
    gateway_env.classes = {}
    ip.register_magics(GpuMagics(ip))
    ip.run_line_magic("gpu", "")
    assert "no GPU runtimes are registered" in capsys.readouterr().out


def test_line_magic_with_a_class_runs_every_following_cell_there(ip, gateway_env, calls, capsys):
    ip.run_line_magic("gpu", "h100 --timeout 60")
    assert "every cell runs on h100 now" in capsys.readouterr().out
    try:
        ip.run_cell("x = 1")
        ip.run_cell("   ")
        ip.run_cell("%%gpu a100 -q\ny = 2")
        assert [c[0] for c in calls] == [("h100", "x = 1\n"), ("a100", "y = 2\n")], "blank cells stay here; %%gpu wins"
        assert calls[0][1]["timeout_s"] == 60.0
        ip.run_line_magic("gpu", "")
        assert "Every cell runs on h100" in capsys.readouterr().out
    finally:
        ip.run_line_magic("gpu", "off")
    assert "they ran on h100" in capsys.readouterr().out
    ip.run_cell("z = 3")
    assert len(calls) == 2, "after %gpu off cells run here"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a100", "serves no class 'a100'; available: h100"),
        ("h100 --timeout soon", "invalid float"),
        ("--eager", "name the class"),
    ],
)
def test_line_magic_with_a_class_refuses_what_every_cell_would(ip, gateway_env, calls, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("gpu", line)
    ip.run_cell("x = 1")
    assert calls == [], "nothing sticks"


def test_load_and_unload_extension(ip):
    kernelhop.load_ipython_extension(ip)
    assert ip.find_cell_magic("gpu") is not None and ip.find_line_magic("gpu") is not None
    kernelhop.unload_ipython_extension(ip)
    assert ip.find_cell_magic("gpu") is None and ip.find_line_magic("gpu") is None
    assert isinstance(kernelhop.__version__, str) and kernelhop.__version__
