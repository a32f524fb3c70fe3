"""Hop a state of CUDA tensors and a torch model through a real gateway and runtime on this host, and check it.

Starts a gateway and a runtime here (the runtime finds its GPU class with nvidia-smi), loads kernelhop into an
in-process IPython shell (the "kernel": no Jupyter needed), puts `--size-mib` of tensors and a model on `--device`,
then runs `%%gpu` cells: a cold one (fresh worker, empty runtime cache, `--eager`: the whole state restored)
that changes one tensor, one in a new session (fresh worker, the runtime's cache already holding every chunk), and a
warm one.
It reports the restore times onto the device on the runtime against issue 15's goals (from a warm host cache
< 0.3 s; from the store on a cold host, fetch included, < 1 s; Modal's anchor ~1.5 s), and fails unless
every tensor and parameter came home equal and on the device it left from, and the device's global random generator
went out and came home advanced.

    python3 scripts/gpu_check.py                         # on a GPU host (scripts/gpu-check.sh sets it up)
    python3 scripts/gpu_check.py --device cpu --size-mib 16   # the CPU part, run by the test command
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from IPython.core.interactiveshell import InteractiveShell
from kernelhop_testing import launch_stack

MiB = 1 << 20
TENSOR_MIB = 256


def make_state(device: str, size_mib: int) -> dict[str, Any]:
    generator = torch.Generator(device=device).manual_seed(0)
    tensors = {}
    left = size_mib
    while left > 0:
        mib = min(TENSOR_MIB, left)
        tensors[f"t{len(tensors)}"] = torch.rand(mib * MiB // 4, generator=generator, device=device)
        left -= mib
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)).to(device)
    return {"tensors": tensors, "model": model}


def hop(shell: InteractiveShell, gpu_class: str, code: str, options: str = "") -> dict[str, float]:
    result = shell.run_cell(f"%%gpu {gpu_class} --quiet {options}\n{code}")
    if not result.success:
        raise SystemExit(f"the %%gpu cell failed: {result.error_in_exec or result.error_before_exec!r}")
    return dict(shell.magics_manager.registry["GpuMagics"].hopper.last_timings)


def check(shell: InteractiveShell, reference: dict[str, torch.Tensor], device: str) -> list[str]:
    problems = []
    tensors = shell.user_ns["tensors"]
    for name, expected in reference.items():
        got = tensors[name]
        if got.device.type != torch.device(device).type:
            problems.append(f"{name} came home on {got.device}, expected {device}")
        elif not torch.equal(got.cpu(), expected):
            problems.append(f"{name} differs after the hop")
    for name, param in shell.user_ns["model"].named_parameters():
        if param.device.type != torch.device(device).type:
            problems.append(f"model.{name} came home on {param.device}")
    remote = shell.user_ns.get("remote_devices", {})
    if any(torch.device(d).type != torch.device(device).type for d in remote.values()):
        problems.append(f"on the runtime the tensors were on {sorted(set(remote.values()))}, expected {device}")
    return problems


def generator_problems(shell: InteractiveShell, gpu_class: str, device: str) -> list[str]:
    """The device's global generator travels (module_state.py): a seeded `%%gpu` cell draws what the same cell draws
    here, and the generator comes home advanced, so the next draw here is the one a purely local run makes."""
    seed = "import torch\n" + ("torch.manual_seed(5)" if device == "cpu" else "torch.cuda.manual_seed_all(5)")
    draw = f"import torch\ndrawn = torch.rand(3, device={device!r}).cpu().tolist()"

    def drawn(remote: bool) -> list[float]:
        if remote:
            hop(shell, gpu_class, draw)
        elif not shell.run_cell(draw).success:
            raise SystemExit("the local draw failed")
        return shell.user_ns["drawn"]

    shell.run_cell(seed)
    sequence = [drawn(True), drawn(False)]
    shell.run_cell(seed)
    local = [drawn(False), drawn(False)]
    if sequence == local:
        return []
    return [f"the {device} generator: a %%gpu cell then a local one drew {sequence}, two local cells {local}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--class", dest="gpu_class", help="pose the runtime as this class (default: its own GPUs)")
    args = parser.parse_args()
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None

    with tempfile.TemporaryDirectory() as tmp:
        classes = [args.gpu_class] if args.gpu_class else ([] if args.device == "cuda" else ["h100"])
        stack = launch_stack(Path(tmp), classes=classes, capacity=1)
        try:
            os.environ.update(stack.env())
            shell = InteractiveShell.instance()
            shell.run_line_magic("load_ext", "kernelhop")
            client = shell.magics_manager.registry["GpuMagics"].hopper.client()
            gpu_class = args.gpu_class or next(iter(sorted(client.classes())))

            shell.user_ns.update(make_state(args.device, args.size_mib))
            if args.device == "cuda":
                torch.cuda.synchronize()
            reference = {name: t.cpu().clone() for name, t in shell.user_ns["tensors"].items()}
            reference["t0"] += 1

            start = time.perf_counter()
            cold = hop(
                shell,
                gpu_class,
                "tensors['t0'].add_(1)\nremote_devices = {k: str(v.device) for k, v in tensors.items()}",
                "--eager",  # the whole state onto the device, the model too, though the cell does not touch it
            )
            cold_wall = time.perf_counter() - start
            # A fresh worker on a host whose cache holds every chunk: the restore from the warm host cache.
            hopper = shell.magics_manager.registry["GpuMagics"].hopper
            hopper.session += "-cached"
            cached = hop(shell, gpu_class, "n_cells = 1", "--eager")
            warm = hop(shell, gpu_class, "n_cells = 2")
            problems = check(shell, reference, args.device)
            problems += generator_problems(shell, gpu_class, args.device)
        finally:
            stack.stop()

    gib = args.size_mib / 1024
    restore = cold.get("runtime_restore_s", float("nan"))
    fetch = cold.get("runtime_fetch_s", float("nan"))
    report = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "gpu_class": gpu_class,
        "state_gib": gib,
        "cold_hop": cold,
        "cold_hop_wall_s": cold_wall,
        "cached_hop": cached,
        "warm_hop": warm,
        "problems": problems,
    }
    print(json.dumps(report, indent=2))
    print(f"\nstate: {gib:.2f} GiB of tensors on {args.device} + a model, class {gpu_class} ({report['device']})")
    print(f"restore onto {args.device} on the runtime: {restore:.3f} s  (Modal's anchor: ~1.5 s)")
    print(f"  + fetch into the runtime's cache over loopback: {fetch:.3f} s")
    print(f"  from the store on a cold host, fetch + restore: {fetch + restore:.3f} s  (goal < 1 s)")
    cached_restore = cached.get("runtime_restore_s", float("nan"))
    print(f"  from a warm host cache, fresh worker: {cached_restore:.3f} s  (goal < 0.3 s)")
    print(f"cold hop, capture to home: {cold['total_s']:.3f} s; warm hop: {warm['total_s']:.3f} s")
    if out is not None:
        (out / "gpu-check.json").write_text(json.dumps(report, indent=2))
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("every tensor and parameter came home equal and on its device")
    return 0


if __name__ == "__main__":
    sys.exit(main())
