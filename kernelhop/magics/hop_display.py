"""The live display of one hop: phase, bytes moved and time left while it runs; the time split when it ends.

The kernel is the source of truth for its own hops, so the hop publishes what it does as a display it updates in
place (`display_id`): JupyterLab's kernelhop extension renders MIME_TYPE as a progress bar and feeds its status bar
and cost meter from the same messages; any other frontend (Notebook 7, VS Code, nbconvert) shows the `text/plain`
line. Published only inside a kernel: a terminal IPython cannot update a line in place and has the status line.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from IPython.display import DisplayHandle, display

MIME_TYPE = "application/vnd.kernelhop.hop+json"
VERSION = 1
# Byte progress comes per frame or per chunk, far faster than anyone reads: publish at most this often.
PROGRESS_EVERY_S = 0.1
# While a cell waits or runs with nothing else to say, the elapsed time still moves, so the cell never looks frozen.
TICK_EVERY_S = 1.0
# The phases in the order a hop passes them; the frontend words them.
PHASES = ("capture", "upload", "queued", "fetch", "run", "return", "home", "done", "failed")


def split_of(timings: dict[str, float]) -> dict[str, float]:
    """The six steps a user reads (capture, upload, queue, restore, run, return) from Hopper.last_timings.

    The runtime says `started` once it has fetched the chunks its cache lacked, so the kernel's queue time holds
    that fetch: it moves to restore, with the worker's restore. return is everything after the cell ran: the worker's
    capture, the runtime's upload, the relay, and this kernel's fetch and restore. The steps add up to the total.
    Without the runtime's own timings (an older runtime) the remote time counts as run.
    """
    fetch = timings.get("runtime_fetch_s", 0.0)
    remote = timings.get("remote_s", 0.0)
    restore = timings.get("runtime_restore_s", 0.0)
    run = timings.get("runtime_run_s", remote - restore)
    return {
        "capture": timings.get("capture_s", 0.0),
        "upload": timings.get("upload_s", 0.0),
        "queue": max(0.0, timings.get("queue_s", 0.0) - fetch),
        "restore": fetch + restore,
        "run": run,
        "return": max(0.0, remote - restore - run) + timings.get("home_s", 0.0),
    }


def gpu_seconds(timings: dict[str, float]) -> float:
    """How long the cell held a runtime's slot: the runtime's own count from assignment to done when it sent one."""
    return timings.get("runtime_total_s", timings.get("remote_s", 0.0))


def eta_s(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None until there is a rate to go by."""
    if done <= 0 or elapsed <= 0 or total <= done:
        return None if total > done else 0.0
    return (total - done) * elapsed / done


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def plain_text(state: dict[str, Any]) -> str:
    """One line for frontends without the extension."""
    where = state["gpu_class"]
    if state.get("runtime"):
        where += f" on runtime {state['runtime']}"
    if state.get("simulated"):
        where += " (simulated on CPU)"
    phase = state["phase"]
    if phase == "done":
        split = " · ".join(f"{k} {v:.2f}" for k, v in state["split"].items())
        return f"[kernelhop] {where} · {state['total_s']:.2f} s ({split}) · {state['gpu_s']:.2f} GPU-s"
    if phase == "failed":
        return f"[kernelhop] {where}: failed: {state['error']}"
    text = f"[kernelhop] {where}: {phase}"
    if phase == "queued" and state.get("position") is not None:
        text += f" (position {state['position']})"
    total = state.get("bytes_total")
    if total:
        text += f" {_mib(state['bytes_done'])} of {_mib(total)}"
        if state.get("eta_s") is not None:
            text += f", about {state['eta_s']:.0f} s left"
    return text + f" · {state['elapsed_s']:.0f} s"


class HopDisplay:
    """The display of one hop. All methods are cheap no-ops when the display is off (outside a kernel)."""

    def __init__(self, gpu_class: str, *, enabled: bool):
        self._t0 = time.monotonic()
        self._phase_t0 = self._t0
        self._last = 0.0
        self.state: dict[str, Any] = {
            "version": VERSION,
            "id": uuid.uuid4().hex,
            "gpu_class": gpu_class,
            "phase": "capture",
            "elapsed_s": 0.0,
        }
        self._handle: DisplayHandle | None = display(self._bundle(), raw=True, display_id=True) if enabled else None

    @classmethod
    def open(cls, shell: Any, gpu_class: str) -> HopDisplay:
        return cls(gpu_class, enabled=getattr(shell, "kernel", None) is not None)

    @property
    def live(self) -> bool:
        """Shown in a frontend, whose text/plain line already says what the status line would."""
        return self._handle is not None

    @property
    def ended(self) -> bool:
        return self.state["phase"] in ("done", "failed")

    def phase(self, phase: str, *, total_bytes: int | None = None) -> None:
        """A new step begins; its byte counts start from zero (or go away when it moves none)."""
        if self.ended:
            return
        self._phase_t0 = time.monotonic()
        self.state.update(phase=phase, bytes_done=0, bytes_total=total_bytes or 0, eta_s=None)
        self._publish(force=True)

    def progress(self, done: int, total: int | None = None) -> None:
        if self.ended:
            return
        if total is not None:
            self.state["bytes_total"] = total
        total = self.state.get("bytes_total") or 0
        self.state["bytes_done"] = done
        self.state["eta_s"] = eta_s(done, total, time.monotonic() - self._phase_t0)
        self._publish(force=bool(total) and done >= total)

    def tick(self) -> None:
        if time.monotonic() - self._last >= TICK_EVERY_S:
            self._publish()

    def queued(self, position: Any) -> None:
        self.state["position"] = position if isinstance(position, int) else None
        self.phase("queued")

    def started(self, event: dict[str, Any]) -> None:
        for key in ("runtime", "worker", "warm", "simulated"):
            if key in event:
                self.state[key] = event[key]
        self.phase("run")

    def remote_progress(self, event: dict[str, Any]) -> None:
        """The runtime's `progress` events: `fetch` (chunks into its cache) before the cell, `upload` after it."""
        phase = "fetch" if event.get("phase") == "fetch" else "return"
        done, total = event.get("done_bytes"), event.get("total_bytes")
        # A step with nothing to move says nothing: "0 of 0 bytes" reads as stuck.
        if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
            return
        if self.state["phase"] != phase:
            self.phase(phase, total_bytes=total)
        self.progress(done, total)
        if phase == "fetch" and done >= total:
            self.phase("run")

    def finished(self, timings: dict[str, float], status: str) -> None:
        """The hop is over: the time split, and the GPU-seconds this cell held a runtime's slot for."""
        if self.ended:
            return
        self.state.update(
            phase="done",
            status=status,
            split=split_of(timings),
            total_s=timings.get("total_s", 0.0),
            gpu_s=gpu_seconds(timings),
            bytes_done=0,
            bytes_total=0,
            eta_s=None,
        )
        self._publish(force=True)

    def failed(self, error: BaseException) -> None:
        if self.ended:
            return
        message = str(error) or type(error).__name__
        if isinstance(error, KeyboardInterrupt):
            message = "interrupted; the local namespace is unchanged"
        self.state.update(phase="failed", error=message, bytes_done=0, bytes_total=0, eta_s=None)
        self._publish(force=True)

    def _bundle(self) -> dict[str, Any]:
        return {MIME_TYPE: dict(self.state), "text/plain": plain_text(self.state)}

    def _publish(self, force: bool = False) -> None:
        if self._handle is None:
            return
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        self.state["elapsed_s"] = now - self._t0
        self._handle.update(self._bundle(), raw=True)
