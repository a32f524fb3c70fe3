"""The CPU part of scripts/gpu_check.py: the same hop and checks, with tensors on the CPU and a runtime posing as h100.

The GPU part runs on a GPU host through scripts/gpu-check.sh; results are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_part(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "KERNELHOP_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--size-mib", "24"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["problems"] == []
    assert report["cold_hop"]["runtime_restore_s"] > 0
    assert report["state_gib"] == 24 / 1024
