"""The runtime's overlay builder (kernelhop_worker/overlay.py) with real pip and a local wheelhouse: what it
installs, what it reuses, and what no install can match."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from kernelhop_worker.overlay import prepare


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    where = tmp_path_factory.mktemp("wheelhouse")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "-q", "--no-deps"]
    subprocess.run([*pip, "--only-binary", ":all:", "-d", where, "termcolor==3.3.0"], check=True)
    return ["--no-index", "--find-links", str(where)]


def build(root: Path, packages: dict[str, str], source: list[str], python: str = platform.python_version()) -> dict:
    # As the runtime runs it: its own process, the environment on stdin.
    command = [sys.executable, "-m", "kernelhop_worker.overlay", "--root", str(root), *source]
    environment = json.dumps({"python": python, "packages": packages})
    return json.loads(subprocess.run(command, input=environment, capture_output=True, text=True, check=True).stdout)


def test_a_set_is_built_once_then_found(tmp_path: Path, wheelhouse: list[str]) -> None:
    first = build(tmp_path, {"termcolor": "3.3.0"}, wheelhouse)
    assert first["built"] and first["notes"] == {}
    site = Path(first["overlay"])
    assert (site / "termcolor" / "__init__.py").is_file() and (site / "termcolor-3.3.0.dist-info").is_dir()
    again = build(tmp_path, {"termcolor": "3.3.0"}, wheelhouse)
    assert again == {**first, "built": False}


def test_what_no_wheel_matches_is_named_and_the_rest_installed(tmp_path: Path, wheelhouse: list[str]) -> None:
    result = build(tmp_path, {"termcolor": "3.3.0", "kh-nowhere": "2.0"}, wheelhouse)
    assert (Path(result["overlay"]) / "termcolor").is_dir()
    assert list(result["notes"]) == ["kh-nowhere"]
    assert "2.0 is not installable here as a wheel (ERROR: " in result["notes"]["kh-nowhere"]


def test_another_python_minor_version_gets_no_overlay(tmp_path: Path, wheelhouse: list[str]) -> None:
    result = prepare(tmp_path, {"python": "3.9.18", "packages": {"termcolor": "3.3.0"}}, wheelhouse)
    assert result["overlay"] is None and list(tmp_path.iterdir()) == []
    assert result["notes"]["python"].startswith(f"kernel 3.9.18, runtime {platform.python_version()}: ")


def test_a_local_version_label_installs_nothing(tmp_path: Path, wheelhouse: list[str]) -> None:
    from importlib.metadata import version

    assert prepare(tmp_path, {"packages": {"numpy": version("numpy") + "+cu121"}}, wheelhouse)["overlay"] is None
