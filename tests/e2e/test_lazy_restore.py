"""Lazy restore end to end: the runtime fetches and restores only what a `%%gpu` cell can reach; the rest of the
state stays in the snapshot, comes home untouched, and is restored on the runtime when a later cell reaches it.

Real ipykernel → gateway → runtime (posing as h100; the GPU is the one part faked) → worker, on loopback.
"""

from __future__ import annotations

from pathlib import Path

from kernelhop_testing import Kernel

TIMINGS = "get_ipython().magics_manager.registry['GpuMagics'].hopper.last_timings"
BIG_BYTES = 8_000_000


def fetched(kernel: Kernel) -> int:
    return int(kernel.value(f"int({TIMINGS}['runtime_fetch_bytes'])"))


def test_a_cell_moves_what_it_reaches_and_later_cells_reach_the_rest(kernel: Kernel) -> None:
    setup = kernel.run(
        "import numpy as np\nbig = np.random.default_rng().random(1_000_000)\nbig_id = id(big)\n"
        "expected = float(big.sum())\nsmall = 3\ndef twice(v):\n    return v * factor\nfactor = 2"
    )
    assert setup.status == "ok", setup.error_text
    # `twice` reaches `factor` through its code: both come, `big` stays behind.
    first = kernel.run("%%gpu h100 --quiet\nr = twice(small)")
    assert first.status == "ok", first.error_text
    assert fetched(kernel) < 100_000
    assert kernel.value("(r, id(big) == big_id)") == "(6, True)"  # big came home untouched: the same object

    second = kernel.run("%%gpu h100 --quiet\ntotal = float(big.sum())\nbig[0] = -1.0")
    assert second.status == "ok", second.error_text
    assert fetched(kernel) >= BIG_BYTES
    assert kernel.value("(total == expected, float(big[0]))") == "(True, -1.0)"

    # Changed here while the warm worker holds its own copy; a cell that does not reach it must not keep that copy,
    # and the next cell that does gets the kernel's.
    kernel.run("big[1] = 5.0")
    assert kernel.run("%%gpu h100 --quiet\nx = 1").status == "ok"
    third = kernel.run("%%gpu h100 --quiet\nb1 = float(big[1])")
    assert third.status == "ok", third.error_text
    assert kernel.value("b1") == "5.0"


def test_eager_restores_the_whole_state(kernel: Kernel) -> None:
    kernel.run("import numpy as np\nbig = np.random.default_rng().random(1_000_000)")
    remote = kernel.run("%%gpu h100 --quiet --eager\nx = 1")
    assert remote.status == "ok", remote.error_text
    assert fetched(kernel) >= BIG_BYTES


def test_a_cell_reaching_the_namespace_itself_gets_everything(kernel: Kernel) -> None:
    kernel.run("import numpy as np\nbig = np.random.default_rng().random(1_000_000)")
    remote = kernel.run("%%gpu h100 --quiet\nn = len(globals()['big'])")
    assert remote.status == "ok", remote.error_text
    assert kernel.value("n") == "1000000"
    assert fetched(kernel) >= BIG_BYTES


def test_a_library_reading_a_global_the_cell_does_not_name_is_told_to_use_eager(kernel: Kernel) -> None:
    # A module that reads its caller's globals by name: no code of the notebook names `secret`. It lies in the
    # kernel's working directory, which the hop carries, so the worker imports it too.
    (Path(kernel.cwd) / "kh_e2e_peek.py").write_text(
        "import inspect\ndef peek(name):\n    return inspect.stack()[1].frame.f_globals[name]\n"
    )
    kernel.run("secret = 41\nwhich = 'sec' + 'ret'")
    cell = "import kh_e2e_peek\nv = kh_e2e_peek.peek(which) + 1"
    lazy = kernel.run("%%gpu h100 --quiet\n" + cell)
    assert lazy.status == "error"
    assert "secret was not restored on the runtime" in lazy.stream_text("stderr")
    assert "--eager" in lazy.stream_text("stderr")
    eager = kernel.run("%%gpu h100 --quiet --eager\n" + cell)
    assert eager.status == "ok", eager.error_text
    assert kernel.value("v") == "42"


def test_a_reached_name_travels_with_the_names_it_shares_objects_with(kernel: Kernel) -> None:
    setup = kernel.run(
        "import numpy as np\nweights = np.zeros(500_000)\nconfig = {'w': weights}\nhistory = []\nother = [0]"
    )
    assert setup.status == "ok", setup.error_text
    assert kernel.run("%%gpu h100 --quiet\nn = 1").status == "ok"  # config and weights now unread on later hops
    # Changed here in place, and a new sharing made here: both must reach the cell and come home as one object graph.
    kernel.run("weights[0] = 7.0\nhistory.append(config)")
    remote = kernel.run("%%gpu h100 --quiet\nseen = float(config['w'][0])\nconfig['w'][1] = 8.0\nhistory.append(1)")
    assert remote.status == "ok", remote.error_text
    assert kernel.value("(seen, float(weights[1]), history[0] is config, config['w'] is weights, len(history))") == (
        "(7.0, 8.0, True, True, 2)"
    )
