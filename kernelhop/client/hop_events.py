"""What a hop tells whoever shows it, as it happens: the engine (hop.py) reports, a presenter renders.

The engine never writes into the cell itself; magics/hop_presenter.py renders a hop in a notebook cell (the live
display, the cell's output, warnings, the status line), and another presenter can show the same hop elsewhere.
"""

from __future__ import annotations

from typing import Any, Protocol


class HopPresenter(Protocol):
    def phase(self, phase: str, *, total_bytes: int | None = None) -> None:
        """A step begins (hop_display.PHASES); ``total_bytes``: what it moves, when it moves bytes."""

    def progress(self, done: int, total: int | None = None) -> None:
        """Bytes this kernel moved so far in the current step."""

    def tick(self) -> None:
        """Nothing happened for a while: the hop is still waiting or running."""

    def waiting(self) -> None:
        """The run has waited past QUEUED_NOTICE_S for a runtime without the gateway naming a queue position."""

    def queued(self, position: Any) -> None:
        """The gateway's `queued` event: the run's place in its class's queue."""

    def started(self, event: dict[str, Any]) -> None:
        """The gateway's `started` event: a runtime took the run (runtime, worker, warm, simulated)."""

    def remote_progress(self, event: dict[str, Any]) -> None:
        """The runtime's `progress` events: its fetch before the cell, its upload after it."""

    def output(self, event: dict[str, Any]) -> None:
        """What the cell itself showed on the runtime: a `stream` or `display` event, in order."""

    def warn(self, text: str) -> None:
        """A line the user should read: what stays local, what did not come home, what a flag did not do."""

    def finished(self, timings: dict[str, float], status: str) -> None:
        """The hop is over (status `ok`, or `error` when the cell raised); ``timings``: Hopper.last_timings."""

    def failed(self, error: BaseException) -> None:
        """The hop failed before it ended; the local namespace is unchanged."""
