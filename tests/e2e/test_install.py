"""The README's first command as a new user meets it: scripts/install.sh (no test extras) makes a venv, its
`kernelhop up` starts the stack, and the example it copied runs top to bottom through nbclient on that venv's kernel,
the local runtime's workers running on the same venv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import pytest
from kernelhop_testing import launch_up, user_environment
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


def test_example_runs_after_the_readme_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_env = {**user_environment(), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime")}
    venv = tmp_path / "venv"
    # The Node packages of this checkout are built already; the Python side is made as the README's command makes it.
    install = subprocess.run(
        ["bash", "scripts/install.sh", "--venv", str(venv), "--skip-node"],
        cwd=ROOT,
        env=user_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert f"run {venv}/bin/kernelhop up" in install.stdout

    data = tmp_path / "kernelhop"
    up = launch_up(venv / "bin" / "kernelhop", data, env=user_env)
    try:
        # A kernel of the user's venv, which finds the gateway as one JupyterLab starts would: through the
        # gateway.json `kernelhop up` wrote.
        spec = tmp_path / "jupyter" / "kernels" / "user-venv"
        spec.mkdir(parents=True)
        argv = [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        env = {"KERNELHOP_HOME": str(data), "PATH": user_env["PATH"]}
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "user", "env": env}))
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
        for key in ("KERNELHOP_GATEWAY", "KERNELHOP_TOKEN"):
            monkeypatch.delenv(key, raising=False)
        nb = nbformat.read(data / "notebooks" / "hello-gpu.ipynb", as_version=4)
        NotebookClient(nb, kernel_name="user-venv", timeout=120).execute()
        plot = next(c for c in nb.cells if "matplotlib" in c.source)
        assert any("image/png" in o.get("data", {}) for o in plot.outputs), plot.outputs
        last = nb.cells[-1].outputs
        assert [o["data"]["text/plain"] for o in last if o["output_type"] == "execute_result"] == [
            "array([0.        , 0.11111111, 0.22222222, 0.33333333, 0.44444444,\n"
            "       0.55555556, 0.66666667, 0.77777778, 0.88888889, 1.        ])"
        ]
    finally:
        up.stop()
