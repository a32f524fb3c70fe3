"""The package overlay for a 5-package set (docs/ARCHITECTURE.md, "Packages"): its first build and the second
(another session with the same set), next to `pip install` of the same wheels into a fresh venv, in the same run.

The overlay is built as the runtime builds it: `python -m kernelhop_worker.overlay` with the kernel's environment on
stdin, from a local wheelhouse (`pip download` beforehand, not timed). Within one runtime a second session does not
even start that command (the runtime remembers the environment); the second figure is a runtime restarted on the
same cache.

    .venv/bin/python benchmarks/package_overlay.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = {"termcolor": "3.3.0", "tabulate": "0.10.0", "appdirs": "1.4.4", "backoff": "2.2.1", "anytree": "2.13.0"}


def timed(command: list[str], **kw: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - start, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pins = [f"{name}=={version}" for name, version in PACKAGES.items()]
    environment = json.dumps({"python": platform.python_version(), "packages": PACKAGES})
    with tempfile.TemporaryDirectory() as tmp:
        wheelhouse = Path(tmp, "wheelhouse")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", wheelhouse, *pins], check=True)
        source = ["--no-index", "--find-links", str(wheelhouse)]
        print("run  overlay first (s)  overlay second (s)  venv create (s)  pip install into it (s)")
        for run in range(args.runs):
            root = Path(tmp, f"overlays-{run}")
            build = [sys.executable, "-m", "kernelhop_worker.overlay", "--root", str(root), *source]
            first, out = timed(build, input=environment)
            assert json.loads(out.stdout)["built"] and not json.loads(out.stdout)["notes"], out.stdout
            second, out = timed(build, input=environment)
            assert not json.loads(out.stdout)["built"], out.stdout
            venv = Path(tmp, f"venv-{run}")
            create, _ = timed([sys.executable, "-m", "venv", str(venv)])
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            install, _ = timed([*pip, "--no-deps", *source, *pins])
            print(f"{run + 1:>3}  {first:>18.2f}  {second:>18.3f}  {create:>15.2f}  {install:>23.2f}")


if __name__ == "__main__":
    main()
