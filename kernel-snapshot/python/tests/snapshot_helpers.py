"""Helpers the snapshot tests share (a plain module: test files import it by name)."""

from __future__ import annotations

import pathlib
from typing import Any

from kernelhop_snapshot import Capturer

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "fixtures"


def round_trip(namespace: dict[str, Any], store: Any) -> dict[str, Any]:
    """Capture with one Capturer and restore with a fresh one, as a hop to another process would."""
    cap = Capturer(store).capture(namespace)
    return Capturer(store).restore(cap.manifest)


def notebook(code: str) -> dict[str, Any]:
    """Run ``code`` as a notebook cell would: module-level code in a ``__main__`` namespace."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(code, "<cell>", "exec"), ns)
    return {k: v for k, v in ns.items() if not (k.startswith("__") and k.endswith("__"))}
