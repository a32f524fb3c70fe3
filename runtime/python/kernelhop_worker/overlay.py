"""The package overlay for a kernel's environment (docs/ARCHITECTURE.md, "Packages"): run by the runtime, outside
any worker's sandbox, with the workers' interpreter, as

    python -m kernelhop_worker.overlay --root DIR [PIP OPTION ...]   (the kernel's {python, packages} on stdin)

It prints one JSON line: {"overlay": DIR or null, "built": bool, "notes": {distribution: why it was not matched}}.

What it installs: each distribution the kernel has that this interpreter lacks or has at another version (a local
label apart: torch 2.3.0+cpu vs +cu121 is a rule of where it runs), at the kernel's exact version, with `--no-deps`
(the kernel's imported dependencies are in the set themselves; the runtime's own stay as they are) and wheels only:
installing a wheel runs none of the package's code, so the build needs no sandbox of its own. An sdist (it would need
a build, which runs the package's code), a distribution missing from the index or wheelhouse, and a kernel of another
Python minor version (no overlay at all: its wheels would not fit) are named instead.

Overlays live in DIR/<digest of the requirement set and the pip options>, written once (built in a temporary
directory, renamed into place), read by every session that has the same set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kernelhop.environment import differences

RECORD = "kernelhop-overlay.json"


def requirements(recorded: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """(pinned requirements to install, notes for what no install can match)."""
    notes: dict[str, str] = {}
    kernel_python = str(recorded.get("python", ""))
    if kernel_python and kernel_python.split(".")[:2] != platform.python_version().split(".")[:2]:
        notes["python"] = (
            f"kernel {kernel_python}, runtime {platform.python_version()}: no packages are installed for another "
            "Python minor version; run the runtime's workers on the kernel's (`kernelhop runtime --python PATH`)"
        )
        return [], notes
    return [f"{dist}=={kernel}" for dist, _, kernel in differences(recorded) if dist != "python"], notes


def overlay_key(reqs: list[str], pip_options: list[str]) -> str:
    text = json.dumps({"python": sys.version_info[:2], "requirements": sorted(reqs), "pip": pip_options})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def pip_install(target: Path, reqs: list[str], pip_options: list[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]
    command += ["--target", str(target), "--no-deps", "--only-binary", ":all:", "--no-compile", *pip_options, *reqs]
    return subprocess.run(command, capture_output=True, text=True)


def pip_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return (errors or lines or [f"pip exited with code {result.returncode}"])[-1]


def build(root: Path, reqs: list[str], pip_options: list[str]) -> tuple[Path, dict[str, str]]:
    """Install `reqs` into a fresh directory under root; one that pip cannot install is named with pip's reason."""
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="building-", dir=root))
    notes: dict[str, str] = {}
    site = stage / "site"
    if pip_install(site, reqs, pip_options).returncode != 0:
        # One bad requirement fails pip's whole run: install one at a time to find which, keeping the others.
        shutil.rmtree(site, ignore_errors=True)
        for req in reqs:
            result = pip_install(site, [req], pip_options)
            if result.returncode != 0:
                dist, _, version = req.partition("==")
                notes[dist] = (
                    f"{version} is not installable here as a wheel ({pip_error(result)}); put a wheel of it on "
                    "the runtime's index or wheelhouse (`kernelhop runtime --index-url URL` / `--find-links DIR`), "
                    "or install it into the Python its workers run"
                )
    site.mkdir(exist_ok=True)
    (stage / RECORD).write_text(json.dumps({"requirements": reqs, "notes": notes}))
    for path in [stage, *stage.rglob("*")]:
        # Workers run as other uids: the overlay is theirs to read, never to write.
        path.chmod(0o755 if path.is_dir() else 0o644)
    return stage, notes


def prepare(root: Path, recorded: dict[str, Any], pip_options: list[str]) -> dict[str, Any]:
    reqs, notes = requirements(recorded)
    if not reqs:
        return {"overlay": None, "built": False, "notes": notes}
    final = root / overlay_key(reqs, pip_options)
    built = False
    if not (final / RECORD).exists():
        stage, _ = build(root, reqs, pip_options)
        try:
            os.rename(stage, final)
            built = True
        except OSError:
            # Another runtime sharing this cache finished the same set first: use its overlay.
            shutil.rmtree(stage, ignore_errors=True)
    record = json.loads((final / RECORD).read_text())
    return {"overlay": str(final / "site"), "built": built, "notes": {**notes, **record["notes"]}}


def report() -> str:
    """What the runtime installed for this run's kernel, and what it could not: `%gpu env` runs this in a worker."""
    here = f"Python {platform.python_version()} at {sys.executable}"
    for entry in sys.path:
        record = Path(entry).parent / RECORD
        if entry and record.is_file():
            built = json.loads(record.read_text())
            notes = built["notes"]
            lines = [f"kernelhop: for this kernel's packages the runtime's workers ({here}) install, from {entry}:"]
            lines += [f"  {req}" for req in built["requirements"] if req.partition("==")[0] not in notes]
            lines += ["and cannot install:"] * bool(notes) + [f"  {name}: {why}" for name, why in notes.items()]
            return "\n".join(lines)
    return f"kernelhop: the runtime's workers ({here}) have every package this kernel imported; nothing to install"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kernelhop_worker.overlay")
    parser.add_argument("--root", required=True, type=Path)
    args, pip_options = parser.parse_known_args()
    recorded = json.load(sys.stdin)
    print(json.dumps(prepare(args.root, recorded if isinstance(recorded, dict) else {}, pip_options)))


if __name__ == "__main__":
    main()
