"""What of the kernel's environment this worker lacks: said before the cell runs (docs/ARCHITECTURE.md, "Files").

The kernel sends, with each hop, the Python version and the distributions of the top-level modules it has imported
(manifest meta "environment", kernelhop/environment.py). A runtime does not install packages yet (an overlay
environment per requirement set is designed, not built), so the worker names each difference, once per worker and
set of differences, with what to do. A local version label (torch 2.3.0+cpu here, +cu121 there) is not a difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kernelhop.environment import differences


class EnvironmentCheck:
    def __init__(self) -> None:
        self._told: list[tuple[str, str, str]] | None = None

    def describe(self, meta: Mapping[str, Any]) -> str | None:
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
            lines.append(f"  {name}: kernel {kernel}, runtime {here}")
        if any(name == "python" for name, _, _ in diffs):
            lines.append("  objects pickled by one Python minor version may not load in another.")
        lines.append(
            "  The runtime installs no packages itself yet: install these into the Python its workers run "
            "(`kernelhop runtime --python PATH`), or pin the kernel's to the runtime's."
        )
        return "\n".join(lines)
