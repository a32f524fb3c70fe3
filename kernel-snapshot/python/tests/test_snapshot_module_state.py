"""The module-state registry and the parts a CPU-only end-to-end hop cannot reach (module_state.py); the hop itself
is tested end to end in tests/e2e/test_module_state.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from kernelhop_snapshot import module_state
from kernelhop_snapshot.module_state import (
    META_KEY,
    KernelModuleState,
    ModuleState,
    TorchRandom,
    WorkerModuleState,
    _encode,
    plugin_providers,
    register,
)


class Counter:
    """A library's own state, as a plugin would carry it."""

    name, module = "tests.counter", "os"

    def __init__(self) -> None:
        self.value = 0

    def read(self) -> dict[str, object]:
        return {"value": self.value}

    def write(self, values, reset) -> None:
        self.value = values.get("value", self.value)


def install_plugin(root: Path, target: str) -> None:
    dist = root / "counter_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: counter-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{module_state.ENTRY_POINT_GROUP}]\ncounter = {target}\n")


def test_an_entry_point_adds_a_provider_and_a_broken_one_is_named(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "counter_plugin.py").write_text(
        "class Counter:\n    name, module = 'plugin.counter', 'os'\n"
        "    def read(self):\n        return {}\n    def write(self, values, reset):\n        pass\n"
    )
    install_plugin(tmp_path, "counter_plugin:Counter")
    monkeypatch.syspath_prepend(str(tmp_path))
    notes: list[str] = []
    assert [p.name for p in plugin_providers(notes)] == ["plugin.counter"] and notes == []

    (tmp_path / "counter_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        f"[{module_state.ENTRY_POINT_GROUP}]\ncounter = counter_plugin:nothing_here\n"
    )
    assert plugin_providers(notes) == []
    assert notes and "module state 'counter' (counter_plugin:nothing_here) is not carried: AttributeError" in notes[0]


def test_register_refuses_what_is_no_provider() -> None:
    with pytest.raises(TypeError, match="is not a ModuleState"):
        register(object())  # type: ignore[arg-type]
    assert isinstance(Counter(), ModuleState)


def test_a_libraries_provider_goes_out_and_its_changes_come_home() -> None:
    kernel_counter, worker_counter = Counter(), Counter()
    kernel_counter.value = 5
    kernel = KernelModuleState(providers=[kernel_counter])
    worker = WorkerModuleState(providers=[worker_counter])
    worker.before_cell(kernel.outgoing())
    assert worker_counter.value == 5
    worker_counter.value = 6  # the cell
    apply = kernel.incoming(worker.after_cell())
    assert kernel_counter.value == 5  # nothing applied before the hop as a whole succeeded
    apply()
    assert kernel_counter.value == 6


def test_a_kernel_without_that_cuda_device_keeps_its_generator_state_and_sends_it_back() -> None:
    assert not torch.cuda.is_available()  # this suite runs on CPU torch; the GPU check covers CUDA hosts
    kernel = KernelModuleState(providers=[TorchRandom()])
    state = bytes(range(16))
    kernel.incoming({META_KEY: {"torch.random": _encode({"cuda:0": state}, ())}})()
    out = kernel.outgoing()[META_KEY]["torch.random"]
    values, _ = module_state._decode(out)
    assert values["cuda:0"] == state and values["cpu"] == torch.get_rng_state().numpy().tobytes()


def test_state_this_kernel_cannot_read_is_left_out_with_a_note_and_the_rest_applies() -> None:
    counter, env = Counter(), module_state.Environment(startup=dict(os.environ))
    kernel = KernelModuleState(providers=[counter, env])
    apply = kernel.incoming(
        {META_KEY: {"tests.counter": "not base64 pickle!", "os.environ": _encode({"MODSTATE_APPLIED": "yes"}, ())}}
    )
    apply()
    try:
        assert counter.value == 0 and os.environ["MODSTATE_APPLIED"] == "yes"
    finally:
        os.environ.pop("MODSTATE_APPLIED", None)
    (note,) = kernel.take_notes()
    assert note.startswith("kernelhop: the cell's tests.counter stays on the runtime: it cannot be read here:")


def test_environment_reset_brings_back_the_start_up_value(monkeypatch) -> None:
    monkeypatch.setenv("MODSTATE_STARTUP", "was-there")
    env = module_state.Environment(startup=dict(os.environ))
    monkeypatch.setenv("MODSTATE_STARTUP", "changed")
    monkeypatch.setenv("MODSTATE_NEW", "new")
    monkeypatch.setenv("KERNELHOP_MODSTATE", "host's own")
    assert env.read() == {"MODSTATE_STARTUP": "changed", "MODSTATE_NEW": "new"}
    env.write({}, ["MODSTATE_STARTUP", "MODSTATE_NEW"])
    assert os.environ["MODSTATE_STARTUP"] == "was-there" and "MODSTATE_NEW" not in os.environ
    env.write({"KERNELHOP_MODSTATE": None}, [])
    assert os.environ["KERNELHOP_MODSTATE"] == "host's own"
