import pytest
from kernelhop_snapshot import user_namespace

InteractiveShell = pytest.importorskip("IPython.core.interactiveshell").InteractiveShell


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    yield sh
    sh.reset(new_session=False)


def test_user_namespace_filters_ipython_names(shell):
    shell.run_cell("import numpy as np\nx = np.arange(3)\ndef f(): return x", store_history=True)
    shell.run_cell("x.sum()", store_history=True)
    shell.run_cell("y = 2 * 3\ny", store_history=True)
    shell.run_cell("_private = 1", store_history=True)
    ns = user_namespace(shell)
    assert set(ns) == {"np", "x", "f", "y", "_private"}
    # sanity: the shell did define the names filtered away
    assert {"In", "Out", "_ih", "_oh", "_dh", "_", "_i", "_ii", "_iii", "get_ipython", "exit", "quit"} <= set(
        shell.user_ns
    )
    assert any(k.startswith("_i") and k[2:].isdigit() for k in shell.user_ns)
    assert any(k[1:].isdigit() for k in shell.user_ns if k.startswith("_"))


def test_rebinding_a_hidden_name_makes_it_the_users(shell):
    shell.run_cell("exit = 'mine'", store_history=True)
    assert "exit" not in user_namespace(shell)  # IPython's own name, whatever it holds
    hidden = next(k for k in shell.user_ns_hidden if k not in ("In", "Out", "exit", "quit", "get_ipython")
                  and not k.startswith("_"))  # fmt: skip
    shell.run_cell(f"{hidden} = 42", store_history=True)
    assert user_namespace(shell)[hidden] == 42
