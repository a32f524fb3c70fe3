"""A background hop (`%%gpu CLASS --background`): the cell returns once its state is sent, the run goes on while
the kernel runs other cells, and what it changed is applied at a safe point, never in the middle of a cell.

- The state the remote cell sees is the kernel's when the `%%gpu` cell ran: capture and upload happen in that cell,
  as in a hop's first steps, so nothing of the namespace is read afterwards.
- The run's output streams into the cell that started it (its thread carries that cell's context, which ipykernel
  routes output by).
- When the run ends, what it changed is fetched and restored into a scratch dict in the background; it is applied
  to the namespace before the next cell runs (IPython's `pre_run_cell`), or at once by `handle.wait()`.
- A name changed here since the hop started (rebound, changed in place, deleted or made) is not overwritten: its
  whole group (names sharing objects) is refused, its remote value left in `handle.refused`, and a line says so.
  Files follow the files rule (a file changed here gets the remote version beside it). Module state (random
  generators, environment, options) stays as the kernel has it: its cells went on meanwhile.
- One hop at a time per kernel: another `%%gpu` (or `%snapshot`) waits for the background one to be settled.
- Interrupting the kernel does not reach a background hop; `handle.cancel()` does (nothing is applied).
"""

from __future__ import annotations

import contextvars
import sys
import threading
from typing import TYPE_CHECKING, Any

from kernelhop_snapshot import Capturer, diff, user_namespace

from .gateway import GatewayConnection, KernelhopError
from .hop_events import HopPresenter
from .hop_store import HopStore

if TYPE_CHECKING:
    from .hop import Home, Hopper, Outcome, Sent


class BackgroundHopError(KernelhopError):
    """What a background hop's handle raises when the hop failed or was cancelled; the namespace is unchanged."""


class Cancelled(KeyboardInterrupt):
    """Raised inside the background thread by its presenter when handle.cancel() asked: the hop's own interrupt
    path then cancels the run on the gateway."""


class _CancellablePresenter:
    """The hop's presenter, checking for a cancel at every event and every quiet poll of the run."""

    def __init__(self, inner: HopPresenter, cancelled: threading.Event) -> None:
        self._inner = inner
        self._cancelled = cancelled

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._cancelled.is_set() and threading.current_thread() is not threading.main_thread():
                raise Cancelled
            return attr(*args, **kwargs)

        return call


class BackgroundHop:
    """The handle of one background hop: `status`, `done()`, `wait()`, `cancel()`, `result`, `refused`."""

    def __init__(self, hopper: Hopper, client: GatewayConnection, sent: Sent, timeout_s: float | None, cell: str):
        self._hopper = hopper
        self._client = client
        self._sent = sent
        self._timeout_s = timeout_s
        self.gpu_class = sent.gpu_class
        #: "running", "ready" (home, not yet applied), "applied", "failed", "cancelled".
        self.status = "running"
        self.cell = cell
        #: The cell's result (its last expression), once applied.
        self.result: Any = None
        #: Remote values of names not applied because they changed here since the hop started.
        self.refused: dict[str, Any] = {}
        self.error: BaseException | None = None
        #: The names it changed, made or deleted here, once applied.
        self.applied: list[str] = []
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._outcome: Outcome | None = None
        self._home: Home | None = None
        self._lock = threading.Lock()
        self._presenter = hopper.presenter
        hopper.presenter = _CancellablePresenter(hopper.presenter, self._cancel)  # type: ignore[assignment]
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._work,), name="kernelhop-background", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<kernelhop background hop on {self.gpu_class} ({self.cell}): {self.status}>"

    def done(self) -> bool:
        """Whether the run is over (its result may still wait to be applied)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the hop to end and apply what it changed now; returns the cell's result, raises the remote
        cell's error (after applying what it changed, as a hop does) or why the hop failed."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"the background hop on {self.gpu_class} still runs after {timeout:g} s")
        self.settle()
        if self.error is not None:
            raise self.error
        return self.result

    def cancel(self) -> None:
        """Stop the run and apply nothing of it (also when it has already come home)."""
        with self._lock:
            if self.status in ("applied", "failed", "cancelled"):
                return
            self._cancel.set()
        self._finished.wait()
        self.settle()

    # -- in the background thread ---------------------------------------------------------------------------------

    def _work(self) -> None:
        hopper = self._hopper
        try:
            self._outcome = hopper._run_sent(self._client, self._sent, self._timeout_s, recapture=False)
            if self._cancel.is_set():
                raise Cancelled
            result = self._outcome.result
            if result is not None:
                # The cell's Out, shown where the cell is, as it would be in the foreground.
                hopper.presenter.output({"event": "display", "data": result.data, "metadata": result.metadata})
            self._home = hopper._fetch_home(self._client, self._sent, self._outcome)
            raised = self._outcome.error is not None or self._outcome.done.get("status") == "error"
            note = "its cell raised; " if raised else ""
            hopper.presenter.warn(
                f"[kernelhop] the background hop on {self.gpu_class} came back; {note}what it changed is applied "
                "before the next cell runs (or by handle.wait())"
            )
            self.status = "ready"
        except Cancelled:
            self.status = "cancelled"
            self.error = BackgroundHopError(f"the background hop on {self.gpu_class} was cancelled; nothing applied")
            self._say_failed(self.error)
        except BaseException as e:
            self.status = "failed"
            self.error = e
            self._say_failed(e)
        finally:
            self._finished.set()

    def _say_failed(self, error: BaseException) -> None:
        try:
            self._presenter.failed(error)
        except Exception:  # the cell's display is gone (its frontend closed): the handle still says why
            pass

    # -- on the main thread, at a safe point ---------------------------------------------------------------------

    def settle(self) -> bool:
        """Apply what came home if the run is over and nothing was applied yet; True when it did something."""
        with self._lock:
            if self.status == "ready" and self._cancel.is_set():
                self.status = "cancelled"
                self.error = BackgroundHopError(f"the background hop on {self.gpu_class} was cancelled; nothing applied")
            if self.status != "ready":
                if self.status in ("failed", "cancelled") and self._hopper.background is self:
                    self._hopper._background_settled(self)
                    self._client.close()
                    return True
                return False
            self.status = "applying"
            hopper, sent, outcome, home = self._hopper, self._sent, self._outcome, self._home
            assert outcome is not None
            try:
                try:
                    refused = self._changed_here(home) if home is not None else frozenset()
                except Exception as e:  # nothing applied: the handle says why
                    self.status = "failed"
                    self.error = BackgroundHopError(
                        f"could not tell what changed here since the background hop started ({type(e).__name__}: "
                        f"{e}); nothing of it was applied"
                    )
                    return True
                if home is not None:
                    self.refused = {n: home.restored[n] for n in sorted(refused) if n in home.restored}
                    changed = set(home.changes.changed_names) | set(home.changes.deleted_names)
                    self.applied = sorted(changed - refused)
                if refused:
                    hopper.presenter.warn(
                        f"kernelhop: not applied from the background hop on {self.gpu_class}: "
                        f"{', '.join(sorted(refused))} changed here since it started (this kernel's values stay; "
                        "the remote ones are in handle.refused)"
                    )
                hopper.capturer.store = sent.store
                self.status = "applied"
                self.result = hopper._settle(
                    self._client, sent, outcome, home, refused=frozenset(refused), module_state=False
                )
            except BaseException as e:
                self.error = e
            finally:
                hopper._background_settled(self)
                self._client.close()
            return True

    def _changed_here(self, home: Home) -> frozenset[str]:
        """The names of each remote-changed group (and remote-deleted names) that this kernel changed since the
        hop's capture: a fresh capture's groups against the sent ones, on a capturer of its own (it must not move
        the kernel's capture lineage)."""
        now = Capturer(HopStore()).capture(user_namespace(self._hopper.shell)).manifest
        sent = self._sent.cap.manifest
        here = diff(sent, now)
        changed_here = set(here.changed_names) | set(here.deleted_names)
        refused: set[str] = set()
        for group in home.changes.changed_groups:
            names = set(group.names)
            # New here too, or changed here: the whole group stays, so names sharing objects keep sharing them.
            if names & (changed_here | (set(now.names()) - set(sent.names()))):
                refused |= names
        refused |= set(home.changes.deleted_names) & changed_here
        return frozenset(refused)


def settle_before_cell(hopper: Hopper) -> None:
    """IPython's pre_run_cell: the safe point where a background hop's result is applied."""
    handle = hopper.background
    if handle is None or not handle.done():
        return
    try:
        if not handle.settle():
            return
        where = f"the background hop on {handle.gpu_class} ({handle.cell})"
        if handle.status == "applied" and handle.applied:
            print(f"kernelhop: {where} came home: {', '.join(handle.applied)}", file=sys.stderr)
        if handle.error is not None:
            print(f"kernelhop: {where}: {type(handle.error).__name__}: {handle.error}", file=sys.stderr)
    except Exception as e:  # never fail the user's next cell for this
        print(f"kernelhop: could not apply the background hop: {type(e).__name__}: {e}", file=sys.stderr)
