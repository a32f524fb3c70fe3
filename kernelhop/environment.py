"""The environment a snapshot was made in (Python and the versions of the imported packages), and how the
environment here differs from it: said before a restore runs anything."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata


@lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    # Scanning installed distributions takes a while; what is installed does not change under a running kernel
    # often enough to matter for a record.
    return metadata.packages_distributions()


def record_environment(modules: Mapping[str, object] | None = None) -> dict[str, object]:
    """{python, packages: {distribution: version}} for the top-level modules imported now (stdlib left out)."""
    loaded = sys.modules if modules is None else modules
    dists = _distributions()
    packages: dict[str, str] = {}
    for name in list(loaded):
        if "." in name or name.startswith("_") or name in sys.stdlib_module_names:
            continue
        for dist in dists.get(name, []):
            if dist not in packages:
                try:
                    packages[dist] = metadata.version(dist)
                except metadata.PackageNotFoundError:
                    continue
    return {"python": platform.python_version(), "packages": dict(sorted(packages.items()))}


def differences(recorded: Mapping[str, object]) -> list[tuple[str, str, str]]:
    """(package, version here, version in the snapshot) for each recorded package whose version differs here."""
    out: list[tuple[str, str, str]] = []
    python = str(recorded.get("python", ""))
    if python and python != platform.python_version():
        out.append(("python", platform.python_version(), python))
    packages = recorded.get("packages")
    for dist, version in sorted((packages if isinstance(packages, Mapping) else {}).items()):
        try:
            here = metadata.version(dist)
        except metadata.PackageNotFoundError:
            here = "not installed"
        if _public(here) != _public(str(version)):
            out.append((dist, here, str(version)))
    return out


def _public(version: str) -> str:
    """A version without its local label: torch 2.3.0+cpu and 2.3.0+cu121 are one release built for other devices,
    which is a rule of where they run, not a mismatch."""
    return version.partition("+")[0]


def describe_differences(diffs: list[tuple[str, str, str]]) -> str:
    lines = ["kernelhop: this environment differs from the one the snapshot was made in:"]
    lines += [f"  {name}: here {here}, in snapshot {there}" for name, here, there in diffs]
    return "\n".join(lines)
