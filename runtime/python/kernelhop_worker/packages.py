"""The kernel's packages on this worker (docs/ARCHITECTURE.md, "Packages"): said before the cell runs.

The kernel sends, with each hop, the Python version and the distributions of the top-level modules it has imported
(manifest meta "environment", kernelhop/environment.py). The runtime installs what this worker lacks into an overlay
(overlay.py) and hands its directory over with the run; it goes first on sys.path (after the notebook's own
directories) before the restore. What still differs then is named, once per worker and set of differences, with why
(the runtime's notes) and what to do. A local version label (torch 2.3.0+cpu here, +cu121 there) is not a difference.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kernelhop.environment import differences


class EnvironmentCheck:
    def __init__(self) -> None:
        self._told: list[tuple[str, str, str]] | None = None
        self._overlay: str | None = None

    def use_overlay(self, overlay: object) -> None:
        """Put the run's overlay on sys.path in place of the last one (a session's packages can grow)."""
        if not isinstance(overlay, str) or overlay == self._overlay:
            return
        if self._overlay in sys.path:
            sys.path.remove(self._overlay)
        sys.path.insert(0, overlay)
        self._overlay = overlay
        importlib.invalidate_caches()

    def describe(self, meta: Mapping[str, Any], notes: Mapping[str, str]) -> str | None:
        """The message for this hop's manifest meta, or None (nothing differs, or this worker said it already)."""
        recorded = meta.get("environment")
        if not isinstance(recorded, Mapping):
            return None
        diffs = differences(recorded)
        if not diffs or diffs == self._told:
            return None
        self._told = diffs
        lines = ["kernelhop: this runtime's Python environment differs from the kernel's (the cell may fail here):"]
        for name, here, kernel in diffs:
            why = notes.get(name) or self._loaded_before(name)
            lines.append(f"  {name}: kernel {kernel}, runtime {here}" + (f"\n    {why}" if why else ""))
        named = {name for name, _, _ in diffs}
        lines += [f"  {why}" for key, why in notes.items() if key not in named]
        if "python" in named:
            lines.append("  objects pickled by one Python minor version may not load in another.")
        return "\n".join(lines)

    def _loaded_before(self, dist: str) -> str:
        """Why an installed overlay package does not count: the worker had imported its own version already."""
        if self._overlay is None:
            return ""
        for name, module in list(sys.modules.items()):
            where = getattr(module, "__file__", None) or ""
            ours = Path(self._overlay, name).exists() or Path(self._overlay, f"{name}.py").exists()
            if "." not in name and ours and where and not where.startswith(self._overlay):
                return (
                    f"the worker had imported {name} from {where} before the overlay; start the runtime's workers "
                    f"on a Python with {dist} at the kernel's version (`kernelhop runtime --python PATH`)"
                )
        return ""
