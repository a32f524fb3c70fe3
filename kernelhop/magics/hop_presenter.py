"""A hop rendered in the notebook cell that runs it: the live display (hop_display.py), the remote cell's output as
it streams, warnings on stderr, and the status line where no live display shows the time split."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from IPython.display import publish_display_data

from .hop_display import HopDisplay


class CellPresenter(HopDisplay):
    """The client.hop_events.HopPresenter of %%gpu. ``quiet`` (--quiet) leaves out the display and the status line."""

    def __init__(self, gpu_class: str, *, enabled: bool, quiet: bool = False):
        super().__init__(gpu_class, enabled=enabled and not quiet)
        self.quiet = quiet

    @classmethod
    def open(cls, shell: Any, gpu_class: str, *, quiet: bool = False) -> CellPresenter:
        return cls(gpu_class, enabled=getattr(shell, "kernel", None) is not None, quiet=quiet)

    def output(self, event: dict[str, Any]) -> None:
        if event.get("event") == "stream":
            stream = sys.stderr if event.get("name") == "stderr" else sys.stdout
            stream.write(str(event.get("text", "")))
            # Flushing each piece keeps the kernel's stdout and stderr messages in the order they happened.
            stream.flush()
        else:
            sys.stdout.flush()
            sys.stderr.flush()
            publish_display_data(event.get("data") or {}, event.get("metadata") or {})

    def warn(self, text: str) -> None:
        sys.stdout.flush()
        print(text, file=sys.stderr, flush=True)

    def waiting(self) -> None:
        if not self.quiet:
            self.warn(f"[kernelhop] waiting for a free {self.state['gpu_class']}…")

    def finished(self, timings: dict[str, float], status: str) -> None:
        super().finished(timings, status)
        if not self.quiet and not self.live:
            self.warn(status_line(self.state, timings))


def status_line(state: dict[str, Any], t: dict[str, float]) -> str:
    """The hop's steps in one line, for a frontend without the live display (a terminal IPython)."""
    where = f"{state['gpu_class']} on runtime {state['runtime']}" if state.get("runtime") else state["gpu_class"]
    if state.get("simulated"):
        where += " (simulated on CPU)"
    return (
        f"[kernelhop] {where} · {t['total_s']:.2f} s (capture {t['capture_s']:.2f}, upload {t['upload_s']:.2f}, "
        f"queue {t['queue_s']:.2f}, remote {t['remote_s']:.2f}, home {t['home_s']:.2f})"
    )


def presenters_for(shell: Any) -> Callable[[str, bool], CellPresenter]:
    """The ``present`` a kernel's Hopper takes: one CellPresenter per hop, shown in the cell of ``shell``."""
    return lambda gpu_class, quiet: CellPresenter.open(shell, gpu_class, quiet=quiet)
