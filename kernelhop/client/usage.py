"""GPU-seconds: what a run is labelled with for counting (its notebook and cell), and the report `kernelhop usage`
and `%gpu usage` print (the gateway counts; see gateway/src/usage.ts)."""

from __future__ import annotations

import os
from typing import Any


def run_labels(shell: Any) -> tuple[str, str]:
    """(notebook, cell) of the cell being run: the notebook's path as Jupyter's server named the kernel's session
    (JPY_SESSION_NAME), and the cell's id as JupyterLab sends it, else its execution count."""
    notebook = os.environ.get("JPY_SESSION_NAME", "")
    cell = ""
    kernel = getattr(shell, "kernel", None)
    try:
        parent = kernel.get_parent() if kernel is not None else {}
        cell = str((parent.get("metadata") or {}).get("cellId") or "")
    except Exception:  # an IPython without a kernel (a terminal): no cell id to read
        cell = ""
    if cell == "":
        count = getattr(shell, "execution_count", None)
        cell = f"In [{count}]" if count is not None else ""
    return notebook, cell


_GROUPS = (
    ("user", "user"),
    ("notebook", "notebook"),
    ("cell", "cell"),
    ("gpu_class", "GPU class"),
    ("runtime", "runtime"),
)


def format_report(report: dict[str, Any]) -> str:
    """A usage report (the gateway's `usage` reply) as a few readable tables."""
    total = report["total"]
    lines = [f"GPU-seconds: {total['gpuSeconds']:.1f} over {total['runs']} run(s)" + _since(report.get("since"))]
    for key, title in _GROUPS:
        rows = report["by"].get(key) or []
        if not rows:
            continue
        lines.append("")
        lines.append(f"by {title}:")
        width = max(len(_label(r["key"])) for r in rows)
        for r in rows:
            lines.append(f"  {_label(r['key']).ljust(width)}  {r['gpuSeconds']:>10.1f} s  {r['runs']:>6} run(s)")
    return "\n".join(lines)


def _label(key: str) -> str:
    # Notebooks and cells are keyed user<TAB>notebook<TAB>cell so two users' notebooks stay apart.
    return " / ".join(part if part != "" else "-" for part in key.split("\t"))


def _since(since: Any) -> str:
    if since is None:
        return ""
    import datetime

    return " since " + datetime.datetime.fromtimestamp(since / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def parse_since(text: str, now: float | None = None) -> int:
    """`--since`: a span back from now (30m, 24h, 7d) or an ISO date or time (2026-12-01, 2026-12-01T09:00); as
    milliseconds since the epoch. Raises ValueError with the accepted forms."""
    import datetime
    import re
    import time

    now = time.time() if now is None else now
    span = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if span:
        seconds = float(span.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[span.group(2)]
        return int((now - seconds) * 1000)
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a span back from now (30m, 24h, 7d) or an ISO date (2026-12-01)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)
