"""The kernel's packages on a runtime whose workers lack them (docs/ARCHITECTURE.md, "Packages"): a runtime whose
workers run a second venv without `termcolor`, serving a wheelhouse this test makes with `pip download` (from pip's
cache or configured index); the kernel has termcolor (on a path of its own). The runtime installs it into an overlay
once, a second session reuses it, what the wheelhouse lacks is named, and --no-packages turns it all off."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernelhop_testing import Kernel, Stack, launch_stack, local_distribution

BUILT = "built package overlay"


def ok(kernel: Kernel, code: str):
    execution = kernel.run(code)
    assert execution.status == "ok", execution.error_text + execution.stream_text("stderr")
    return execution


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    root = tmp_path_factory.mktemp("packages")
    wheelhouse = root / "wheelhouse"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary", ":all:", "-d", wheelhouse, "termcolor"], check=True)
    kernel_site = root / "kernel-site"
    wheels = list(wheelhouse.glob("termcolor-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", kernel_site, *wheels], check=True)
    # The runtime's workers: a venv of their own that sees this venv's packages (kernelhop among them), not termcolor.
    # Not under /tmp: a sandboxed worker has a private /tmp, so an interpreter there is out of its sight.
    venv = Path(tempfile.mkdtemp(prefix="kernelhop-runtime-venv-", dir="/var/tmp"))
    venv.chmod(0o755)  # workers run as uids of their own
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    runtime_python = venv / "bin" / "python"
    site = subprocess.run(
        [runtime_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    base = sysconfig.get_paths()["purelib"]
    (Path(site) / "kernelhop-base.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    stack = launch_stack(
        root / "stack", python=str(runtime_python), runtime_extra=["--find-links", str(wheelhouse)]
    )
    yield stack, kernel_site
    stack.stop()
    shutil.rmtree(venv)


@pytest.fixture
def kernels(setting: tuple[Stack, Path]) -> Iterator[list[Kernel]]:
    made: list[Kernel] = []
    yield made
    for k in made:
        k.shutdown()


def with_termcolor(kernels: list[Kernel], setting: tuple[Stack, Path]) -> Kernel:
    stack, kernel_site = setting
    kernel = Kernel(stack.env())
    kernels.append(kernel)
    ok(kernel, f"import sys\nsys.path.insert(0, {str(kernel_site)!r})\nimport termcolor\n%load_ext kernelhop")
    return kernel


def test_a_package_the_runtime_lacks_is_installed_once_for_every_session(
    setting: tuple[Stack, Path], kernels: list[Kernel]
) -> None:
    stack, _ = setting
    for _ in range(2):
        code = "%%gpu h100\nimport termcolor\nfrom importlib.metadata import version\n"
        remote = ok(with_termcolor(kernels, setting), code + "print(version('termcolor'), termcolor.__file__)")
        version, where = remote.stream_text("stdout").split()
        assert version == "3.3.0"
        assert "/kernelhop/packages/" in where
        assert "termcolor" not in remote.stream_text("stderr")
    # The second session found the overlay built: the runtime built it once.
    assert sum(BUILT in line for line in stack.runtime.lines) == 1


def test_a_package_the_wheelhouse_lacks_is_named_and_the_cell_runs(
    setting: tuple[Stack, Path], kernels: list[Kernel], tmp_path: Path
) -> None:
    kernel = with_termcolor(kernels, setting)
    site = local_distribution(tmp_path / "absent-site", "kh-absent-pkg", "1.0")
    ok(kernel, f"sys.path.insert(0, {str(site)!r})\nimport kh_absent_pkg")
    remote = ok(kernel, "%%gpu h100\nimport termcolor\nprint('ran', termcolor.__name__)")
    err = remote.stream_text("stderr")
    assert "kh-absent-pkg: kernel 1.0, runtime not installed" in err
    assert "1.0 is not installable here as a wheel" in err and "--find-links DIR" in err
    assert "termcolor" not in err
    both = remote.stream_text()
    assert both.index("kh-absent-pkg") < both.index("ran termcolor")
    # %gpu env: what the runtime installs for this kernel, and what it cannot.
    env = ok(kernel, "%gpu env h100").stream_text("stdout")
    assert "install, from /kernelhop/packages/" in env
    assert "  termcolor==3.3.0\nand cannot install:\n  kh-absent-pkg: 1.0 is not installable" in env


def test_no_packages_installs_nothing_and_names_nothing(setting: tuple[Stack, Path], kernels: list[Kernel]) -> None:
    kernel = with_termcolor(kernels, setting)
    remote = ok(
        kernel,
        "%%gpu h100 --no-packages\ntry:\n    import termcolor\nexcept ImportError:\n    print('no termcolor here')",
    )
    assert remote.stream_text("stdout").strip() == "no termcolor here"
    assert "differs" not in remote.stream_text("stderr")


@pytest.mark.skipif(os.getuid() != 0, reason="workers run as uids of their own only under a root runtime")
def test_a_cell_cannot_list_the_overlays_other_sessions_use(
    setting: tuple[Stack, Path], kernels: list[Kernel]
) -> None:
    remote = ok(
        with_termcolor(kernels, setting),
        "%%gpu h100\nimport os, termcolor\ntry:\n    os.listdir('/kernelhop/packages')\n    print('listed')\n"
        "except PermissionError:\n    print('refused')",
    )
    assert remote.stream_text("stdout").strip() == "refused"
