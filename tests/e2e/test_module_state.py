"""State that lives in modules travels with a hop (kernelhop_snapshot/module_state.py), end to end: real ipykernels,
gateway, runtime and worker. Each test compares a `%%gpu` cell with the same cell run locally in the same kernel."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from kernelhop_testing import Kernel, Stack
from nbclient import NotebookClient


def ok(kernel: Kernel, code: str):
    execution = kernel.run(code)
    assert execution.status == "ok", execution.error_text
    return execution


def out(kernel: Kernel, code: str) -> str:
    return ok(kernel, code).stream_text("stdout")


def remote(code: str) -> str:
    return f"%%gpu h100 --quiet\n{code}"


GENERATORS = {
    "random": ("import random\nrandom.seed(7)", "print([random.random() for _ in range(3)])"),
    "numpy": ("import numpy as np\nnp.random.seed(42)", "print(np.random.random(3).tolist(), np.random.randn())"),
    "torch": ("import torch\ntorch.manual_seed(3)", "print(torch.rand(3).tolist())"),
}


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_a_seeded_cell_draws_the_same_numbers_remotely_and_the_generator_comes_home_advanced(
    kernel: Kernel, generator: str
) -> None:
    seed, draw = GENERATORS[generator]
    ok(kernel, seed)
    drawn_remotely = out(kernel, remote(draw))
    next_after_hop = out(kernel, draw)
    ok(kernel, seed)
    assert drawn_remotely == out(kernel, draw)
    assert next_after_hop == out(kernel, draw)
    # A warm worker of the session gets the kernel's current state at each hop, not the one it kept.
    ok(kernel, seed)
    assert out(kernel, remote(draw)) == drawn_remotely


def test_environment_variables_set_changed_and_deleted_travel_both_ways(kernel: Kernel) -> None:
    ok(kernel, "import os\nos.environ['MY_SETTING'] = 'set-in-notebook'\nos.environ['DOOMED'] = 'x'")
    ok(kernel, "os.environ['SHELL_LEVEL_NOTE'] = 'first'")
    seen = out(kernel, remote("print(os.environ.get('MY_SETTING'), os.environ.get('DOOMED'))"))
    assert seen.split() == ["set-in-notebook", "x"]
    ok(
        kernel,
        remote(
            "os.environ['MY_SETTING'] = 'changed-remotely'\ndel os.environ['DOOMED']\n"
            "os.environ['NEW_ONE'] = 'made-remotely'\nos.environ.pop('SHELL_LEVEL_NOTE')"
        ),
    )
    assert kernel.value("[os.environ.get(n) for n in ('MY_SETTING', 'DOOMED', 'NEW_ONE', 'SHELL_LEVEL_NOTE')]") == (
        "['changed-remotely', None, 'made-remotely', None]"
    )
    # A variable the kernel deleted since is gone on the warm worker too.
    ok(kernel, "del os.environ['NEW_ONE']")
    assert out(kernel, remote("print(os.environ.get('NEW_ONE'))")).strip() == "None"


def test_a_failing_cell_brings_its_changes_home_and_a_failed_hop_brings_none(kernel: Kernel) -> None:
    ok(kernel, "import os, random\nrandom.seed(1)\nos.environ['STEP'] = 'start'")
    raised = kernel.run(remote("os.environ['STEP'] = 'before-raise'\nrandom.random()\nraise ValueError('late')"))
    assert raised.status == "error"
    # As a local cell that raised: what it changed before raising stays changed.
    assert kernel.value("os.environ['STEP']") == "'before-raise'"
    ok(kernel, "random.seed(1)\nrandom.random()\nexpected = random.random()\nrandom.seed(1)\nrandom.random()")
    timed_out = kernel.run(
        "%%gpu h100 --quiet --timeout 1\nimport time\nos.environ['STEP'] = 'lost'\nrandom.random()\ntime.sleep(30)"
    )
    assert timed_out.status == "error"
    assert kernel.value("(os.environ['STEP'], random.random() == expected)") == "('before-raise', True)"


def test_the_hosts_own_variables_stay_where_they_are(kernel: Kernel) -> None:
    ok(kernel, "import os\nlocal_path = os.environ['PATH']\nos.environ['PATH'] = local_path + ':/only/in/the/kernel'")
    hop = ok(kernel, remote("remote_path = os.environ['PATH']\nos.environ['KERNELHOP_RUNTIME_ONLY'] = '1'"))
    assert "environment variable PATH changed in this kernel is not carried" in hop.stream_text("stderr")
    assert kernel.value("'/only/in/the/kernel' in remote_path") == "False"
    home = "(os.environ['PATH'].endswith('/only/in/the/kernel'), 'KERNELHOP_RUNTIME_ONLY' in os.environ)"
    assert kernel.value(home) == "(True, False)"


def test_a_secret_is_carried_but_appears_in_no_output_or_log(stack: Stack, kernel: Kernel) -> None:
    secret = "s3cr3t-value-0f-the-notebook"
    ok(kernel, f"import os\nos.environ['MY_API_TOKEN'] = {secret!r}\nos.environ['PATH'] += ':/elsewhere'")
    hop = kernel.run("%%gpu h100\nimport os\nfound = os.environ.get('MY_API_TOKEN')")
    assert hop.status == "ok", hop.error_text
    assert kernel.value("found == os.environ['MY_API_TOKEN']") == "True"
    shown = [str(m["content"]) for _, m in hop.messages]
    assert shown and not any(secret in text for text in shown)
    # The gateway's and runtime's logs (the runtime's include its workers' stderr).
    assert not any(secret in line for service in (stack.gateway, stack.runtime) for line in service.lines)


def test_library_options_travel_both_ways(kernel: Kernel) -> None:
    setup = (
        "import numpy as np, pandas as pd, warnings, torch, matplotlib\n"
        "pd.set_option('display.max_rows', 5)\n"
        "np.set_printoptions(precision=2)\n"
        "np.seterr(divide='raise')\n"
        "matplotlib.rcParams['lines.linewidth'] = 7.5\n"
        "warnings.simplefilter('error', UserWarning)\n"
        "torch.set_default_dtype(torch.float64)\n"
        "torch.use_deterministic_algorithms(True, warn_only=True)"
    )
    probe = (
        "import numpy as np, pandas as pd, warnings, torch, matplotlib\n"
        "print(pd.get_option('display.max_rows'), np.array([1/3]), np.geterr()['divide'],"
        " matplotlib.rcParams['lines.linewidth'], torch.get_default_dtype(),"
        " torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())\n"
        "try:\n    warnings.warn('boom', UserWarning)\nexcept UserWarning:\n    print('warning raised')"
    )
    ok(kernel, setup)
    local = out(kernel, probe)
    assert local == out(kernel, remote(probe))
    change = (
        "pd.set_option('display.max_rows', 9)\nnp.set_printoptions(precision=4)\nnp.seterr(divide='ignore')\n"
        "matplotlib.rcParams['lines.linewidth'] = 2.25\nwarnings.resetwarnings()\n"
        "torch.set_default_dtype(torch.float32)\ntorch.use_deterministic_algorithms(False)"
    )
    ok(kernel, remote(change))
    assert out(kernel, probe).split("\n")[0].split() == [
        "9", "[0.3333]", "ignore", "2.25", "torch.float32", "False", "False"
    ]  # fmt: skip
    assert "warning raised" not in out(kernel, probe)


def test_an_option_that_cannot_be_pickled_stays_on_the_runtime_and_the_cell_says_so(kernel: Kernel) -> None:
    ok(kernel, "import pandas as pd\npd.set_option('display.max_rows', 5)")
    hop = ok(
        kernel,
        remote(
            "import threading\npd.set_option('display.max_rows', 8)\n"
            "pd.set_option('display.float_format', lambda x, lock=threading.Lock(): f'{x:.1f}')"
        ),
    )
    assert "kernelhop: the cell's pandas.options does not come home: TypeError" in hop.stream_text("stderr")
    assert kernel.value("(pd.get_option('display.max_rows'), pd.get_option('display.float_format'))") == "(5, None)"


def test_a_library_imported_only_by_the_cell_brings_its_options_home(kernel: Kernel) -> None:
    ok(kernel, "import sys\nhad_pandas = 'pandas' in sys.modules")
    assert kernel.value("had_pandas") == "False"
    ok(kernel, remote("import pandas as pd\npd.set_option('display.precision', 3)"))
    assert kernel.value("pd.get_option('display.precision')") == "3"


def test_another_session_never_sees_this_sessions_environment(
    stack: Stack, make_kernel: Callable[[dict[str, str]], Kernel]
) -> None:
    first, second = make_kernel(stack.env()), make_kernel(stack.env())
    ok(first, "import os\nos.environ['ONLY_MINE'] = 'first-session'")
    ok(first, remote("os.environ['MADE_REMOTELY'] = 'first-session'"))
    assert first.value("os.environ.get('MADE_REMOTELY')") == "'first-session'"
    seen = out(second, remote("import os\nprint(os.environ.get('ONLY_MINE'), os.environ.get('MADE_REMOTELY'))"))
    assert seen.split() == ["None", "None"]


NOTEBOOK = [
    "import os, random, warnings\nimport numpy as np\nimport pandas as pd",
    "def simulate(n):\n    np.random.seed(42)\n    return np.random.random(n).round(6).tolist()",
    "random.seed(7)\nos.environ['MY_SETTING'] = 'set-in-notebook'\npd.set_option('display.max_rows', 5)\n"
    "np.set_printoptions(precision=3)\nwarnings.simplefilter('ignore', RuntimeWarning)",
    "fire = simulate(4)\nprint(fire, random.random())",
    "print(np.random.random(2), os.environ.get('MY_SETTING'), pd.get_option('display.max_rows'))",
    "os.environ['MY_SETTING'] = 'changed'\npd.set_option('display.max_rows', 7)\ndf = pd.DataFrame({'a': range(10)})\n"
    "np.float64(1.0) / 0\nrows = len(repr(df).splitlines())",
    "print(random.random(), np.random.random(), os.environ['MY_SETTING'], pd.get_option('display.max_rows'), rows)",
    "df",
]


def run_notebook(stack: Stack, remote_cells: bool, path: Path) -> tuple[list[list[dict]], str]:
    nb = nbformat.v4.new_notebook()
    cells = ["%load_ext kernelhop", *(remote(c) if remote_cells and i > 0 else c for i, c in enumerate(NOTEBOOK))]
    probe = (
        "import json\nprint(json.dumps({k: repr(v) for k, v in sorted(globals().items()) if not k.startswith('_') "
        "and k not in ('In', 'Out', 'exit', 'quit', 'get_ipython', 'json')}))"
    )
    nb.cells = [nbformat.v4.new_code_cell(c) for c in [*cells, probe]]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path)}}).execute(
        env=stack.env()
    )
    outputs = [[{k: v for k, v in o.items() if k != "execution_count"} for o in c.outputs] for c in nb.cells[1:-1]]
    # A function's repr holds its address, which differs between any two kernels.
    return outputs, re.sub(r" at 0x[0-9a-f]+", "", nb.cells[-1].outputs[0]["text"])


def test_a_notebook_gives_the_same_outputs_and_namespace_whether_its_cells_run_locally_or_remotely(
    stack: Stack, tmp_path: Path
) -> None:
    local_outputs, local_namespace = run_notebook(stack, False, tmp_path)
    remote_outputs, remote_namespace = run_notebook(stack, True, tmp_path)
    assert remote_outputs == local_outputs
    assert remote_namespace == local_namespace
