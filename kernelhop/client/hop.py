"""One hop: capture the namespace, send what the gateway lacks, run the cell remotely, bring home what changed.

This is the engine: it reports what happens to a presenter (hop_events.py) and shows nothing itself.

The local namespace changes in one step at the very end (`_apply_home`), after everything that can fail has succeeded:
a hop that fails or is interrupted earlier leaves it exactly as it was (ARCHITECTURE.md, "The path of one %%gpu cell").
"""

from __future__ import annotations

import pkgutil
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kernelhop_snapshot import (
    Capture,
    Capturer,
    Digest,
    Manifest,
    RemoteOnly,
    cell_reach,
    diff,
    user_namespace,
)
from kernelhop_snapshot.module_state import KernelModuleState

from ..config import recipe_max_s
from ..environment import record_environment
from .background import BackgroundHop
from .failover import Gateways
from .files import WorkingFiles
from .gateway import GatewayConnection, GatewayError, GatewayUnreachable, KernelhopError
from .hop_events import HopPresenter
from .hop_store import HopStore
from .recompute import META_KEY, CellLog, Plan
from .result_check import check_result
from .usage import run_labels

# How long a cell may wait for a GPU before the kernel says it is queued.
QUEUED_NOTICE_S = 2.0
# Slack past --timeout before the kernel stops waiting on a gateway that never said `timeout` itself.
TIMEOUT_SLACK_S = 30.0
# How long an interrupted hop waits for the gateway to confirm the cancel.
CANCEL_WAIT_S = 2.0


class HopError(KernelhopError):
    """The cell ran, but what it made could not be brought home; the local namespace is unchanged."""


class RemoteCellError(KernelhopError):
    """The cell raised on the runtime. Shown with the remote traceback, as a local error would be."""

    def __init__(self, gpu_class: str, ename: str, evalue: str, traceback: list[str]):
        super().__init__(f"{ename}: {evalue} (raised by the cell on {gpu_class})")
        self.gpu_class = gpu_class
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback

    def _render_traceback_(self) -> list[str]:
        return list(self.traceback) or [f"{self.ename}: {self.evalue}"]


def remote_cell_error(gpu_class: str, error: Mapping[str, Any]) -> RemoteCellError:
    """The exception for a cell that raised on the runtime: a RemoteCellError that is, as Ray's task errors are,
    also an instance of the remote exception's own class where that class can be found here (a builtin, a library's
    exception, a class of the notebook's), so `except ValueError`, nbclient's and papermill's reports and
    `raises-exception` tags see the remote type. Its message is the remote one and its traceback the remote
    traceback; the remote exception's other attributes do not travel. Where the class cannot be found or
    subclassed, it is a RemoteCellError alone and its traceback says why."""
    ename = str(error.get("ename", "RemoteError"))
    evalue = str(error.get("evalue", "the remote cell failed without reporting an error"))
    traceback = list(error.get("traceback") or [])
    etype = str(error.get("etype", ""))  # "module:qualname", as pkgutil.resolve_name reads it
    try:
        cls = _remote_class(etype)
        # The remote class's own __new__/__init__ may want other arguments: build it through the nearest builtin's
        # __new__ (BaseException's, or OSError's, which CPython requires for its subclasses) and BaseException's init.
        typed = type(
            cls.__name__,
            (RemoteCellError, cls),
            {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__str__": lambda self: self.evalue},
        )
        builtin = next(b for b in typed.__mro__ if "__new__" in vars(b) and b.__module__ == "builtins")
        typed_error = builtin.__new__(typed, evalue)
        BaseException.__init__(typed_error, evalue)
        typed_error.gpu_class, typed_error.ename, typed_error.evalue = gpu_class, ename, evalue
        typed_error.traceback = traceback
        return typed_error
    except Exception as why:  # importing the class's module or subclassing it may raise anything
        note = f"kernelhop: raised as RemoteCellError, not as {etype or ename}: {type(why).__name__}: {why}"
        return RemoteCellError(gpu_class, ename, evalue, [*traceback, note])


def _remote_class(etype: str) -> type[Exception]:
    if not etype:
        raise LookupError("the runtime did not say which module the exception's class is in")
    # __main__ is the notebook's namespace here as on the runtime (IPython puts its user module there), so a class
    # the notebook defined resolves to the kernel's own class, the one its `except` clauses name.
    cls = pkgutil.resolve_name(etype)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        raise TypeError(f"{etype} is not an Exception subclass here; only those are raised as their own class")
    if issubclass(cls, SyntaxError):
        raise TypeError("IPython shows a SyntaxError from its file and line, which do not travel")
    return cls


class RemoteResult:
    """The value of the cell's last expression, as the runtime rendered it; shown as the cell's Out."""

    def __init__(self, data: dict[str, Any], metadata: dict[str, Any]):
        self.data = data
        self.metadata = metadata

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data, self.metadata

    def __repr__(self) -> str:
        return str(self.data.get("text/plain", "<remote result>"))


@dataclass
class Outcome:
    """What the run reported, gathered while its events were shown."""

    done: dict[str, Any] | None = None
    result: RemoteResult | None = None
    error: dict[str, Any] | None = None
    started: dict[str, Any] = field(default_factory=dict)
    queue_s: float = 0.0
    remote_s: float = 0.0
    ended_at: float = 0.0


@dataclass
class Sent:
    """A hop's state as sent (steps 1-3): what the run and the bring-home need of it."""

    store: HopStore
    cap: Capture
    reach: frozenset[str] | None
    tree: Any
    files: bool
    gpu_class: str
    code: str
    labels: tuple[str, str]  # (notebook, cell) of the cell that started the hop, for usage
    capture: Callable[[frozenset[str] | None], Capture]
    t0: float
    t1: float
    t2: float


@dataclass
class Home:
    """What came home, restored into a scratch dict and not yet applied."""

    manifest: Manifest
    changes: Any  # kernelhop_snapshot.diff.ManifestDiff
    restored: dict[str, Any]
    apply_module_state: Callable[[], None]


class Hopper:
    """The hops of one kernel: one session id, one capturer and one gateway connection.

    Chunks live in a store made for each hop and dropped after it (see hop_store.py); what the gateway already
    holds is remembered by the client, so a later hop still sends only what changed.
    """

    def __init__(self, shell: Any, present: Callable[[str, bool], HopPresenter]):
        """``present(gpu_class, quiet)`` makes the presenter of one hop (magics: CellPresenter.open)."""
        self.shell = shell
        self.present = present
        # Random 128 bits: the gateway binds a session to its user anyway, and nobody should guess it either.
        self.session = secrets.token_hex(16)
        self.capturer = Capturer(HopStore())
        # The chunks of groups that came home but could not be unpickled here (RemoteOnly placeholders): kept, since
        # each hop's store is dropped, so they can be sent back to a gateway that has lost them.
        self._remote_blobs: dict[Digest, Any] = {}
        # The cells run here, from which unpicklable variables get recipes to rebuild them on the runtime.
        self.cells = CellLog(shell)
        # Random generators, environment and library options: out with each hop, home with its changes.
        self.module_state = KernelModuleState()
        # The working directory the hops carry and bring home (files.py).
        self.files = WorkingFiles()
        # The gateways the settings name and the failover rule of every operation through them (failover.py).
        self.gateways = Gateways(lambda line: self.presenter.warn(line))
        # Set once the run of the hop under way was started on a runtime: then a lost gateway fails the hop, since
        # the cell may have run; before that, the hop is sent again through another gateway.
        self._started = False
        # Seconds of the last hop's steps, here and on the runtime (its `done` timings): for the benchmarks and the
        # GPU check, which need the split and not only the status line.
        self.last_timings: dict[str, float] = {}
        # Who shows the hop under way (hop_events.py): progress, output and warnings for the cell.
        self.presenter = present("", True)
        # Names a cell made on the runtime that could not come home (unpicklable there): warned about once, and
        # again only once one has come home or gone and then been made again.
        self._left_on_runtime: set[str] = set()
        # The background hop in flight or waiting to be applied (background.py); one hop at a time per kernel.
        self.background: BackgroundHop | None = None

    def close(self) -> None:
        self.gateways.close()

    def client(self) -> GatewayConnection:
        """The connection to the gateway in use of those the settings name now (Gateways.client)."""
        return self.gateways.client()

    def new_store(self) -> HopStore:
        """A chunk store for one hop or snapshot operation. It starts with the chunks of values that live on the
        runtime only: a capture names them, and a gateway that has lost them gets them again from here."""
        store = HopStore()
        for digest, data in self._remote_blobs.items():
            store.put(digest, data)
        return store

    def describe_classes(self) -> str:
        return self.gateways.call(self._describe_classes, what="%gpu")

    def _describe_classes(self, client: GatewayConnection) -> str:
        classes = client.classes()
        if not classes:
            return (
                f"no GPU runtimes are registered with the gateway at {client.url}; "
                "start one with `kernelhop up` (gateway, runtime and JupyterLab) or `kernelhop runtime`"
            )
        lines = [f"GPU classes at {client.url}:"]
        width = max(len(n) for n in classes)
        for name in sorted(classes):
            c = classes[name]
            runtimes = c.get("runtimes", 0)
            line = (
                f"  {name:<{width}}  {runtimes} runtime{'s' if runtimes != 1 else ''}, "
                f"{c.get('busy', 0)}/{c.get('capacity', 0)} busy, {c.get('queued', 0)} queued"
            )
            if c.get("simulated"):
                line += "  (simulated on CPU)"
            lines.append(line)
        lines.append(f"This kernel: {session_line(client.session_status(self.session))}")
        lines.append("Run a cell on one with %%gpu CLASS.")
        return "\n".join(lines)

    def hop(
        self,
        gpu_class: str,
        code: str,
        *,
        timeout_s: float | None = None,
        quiet: bool = False,
        eager: bool = False,
        rebuild: tuple[str, ...] = (),
        files: bool = True,
        packages: bool = True,
    ):
        """Run `code` on `gpu_class`; returns the cell's result (for Out) or None; raises on any failure. The
        runtime restores only what the cell can reach, or with `eager` the whole state; `rebuild` names
        unpicklable variables to rebuild there whatever the recipe rules say but the safety rule (recompute.py);
        with `files` the cell runs in a copy of the working directory, and what it did there comes home; with
        `packages` the runtime installs the packages of this kernel its workers lack."""
        self.refuse_while_background("%%gpu")
        # --quiet leaves out both the live display and the status line.
        self.presenter = self.present(gpu_class, quiet)

        def attempt(client: GatewayConnection) -> Any:
            # Several gateways: a hop whose cell has not started anywhere is sent again, whole, through another;
            # its chunks are in the shared store, so only what that gateway's view lacks moves.
            self.capturer.store = store = self.new_store()
            self._started = False
            return self._hop(client, store, gpu_class, code, timeout_s, eager, rebuild, files, packages)

        try:
            return self.gateways.call(attempt, what="hop", begun=lambda: self._started)
        except GatewayUnreachable as e:
            # Also mid-hop, once the gateway died under it: say what the user keeps.
            stopped = GatewayUnreachable(f"{e} This hop stopped there; the local namespace is unchanged.")
            self.presenter.failed(stopped)
            raise stopped from None
        except GatewayError as e:
            # What the gateway or the runtime reports (a worker that died, a capture that failed there) knows
            # nothing of this kernel: say here what the user keeps.
            told = e if "unchanged" in e.message else GatewayError(
                e.code, f"{e.message}; the local namespace is unchanged", e.missing
            )
            self.presenter.failed(told)
            if told is e:
                raise
            raise told from None
        except BaseException as e:
            self.presenter.failed(e)
            raise
        finally:
            # Drop this hop's chunks (views of the user's objects, and what came home) with the store.
            self.capturer.store = HopStore()

    def hop_background(
        self,
        gpu_class: str,
        code: str,
        *,
        timeout_s: float | None = None,
        quiet: bool = False,
        eager: bool = False,
        rebuild: tuple[str, ...] = (),
        files: bool = True,
        packages: bool = True,
    ) -> BackgroundHop:
        """Capture and send now, as `hop` does, then run in the background; returns its handle at once
        (background.py says what is applied when)."""
        self.refuse_while_background("%%gpu --background")
        self.presenter = self.present(gpu_class, quiet)

        def send(client: GatewayConnection) -> tuple[GatewayConnection, Sent]:
            # Nothing runs before the state is sent: a gateway lost meanwhile is one to send it through another.
            self.capturer.store = store = self.new_store()
            return client, self._send(client, store, gpu_class, code, eager, rebuild, files, packages)

        try:
            client, sent = self.gateways.call(send, what="hop")
            # A connection of its own: this one stays free for the kernel's other requests meanwhile.
            own = GatewayConnection(
                client.url, client.token, source=client.source, ca=client.ca, fingerprint=client.fingerprint
            )
            own.known = set(client.known)
        except BaseException as e:
            self.presenter.failed(e)
            self.capturer.store = HopStore()
            raise
        # The hop's store stays the capturer's until the result is applied: the restore reads from it.
        self.background = BackgroundHop(self, own, sent, timeout_s, sent.labels[1])
        return self.background

    def refuse_while_background(self, what: str) -> None:
        handle = self.background
        if handle is not None:
            raise KernelhopError(
                f"{what}: the background hop on {handle.gpu_class} ({handle.cell}) is {handle.status}; "
                "`%gpu wait` (or handle.wait()) applies it, `%gpu cancel` (or handle.cancel()) drops it"
            )

    def _background_settled(self, handle: BackgroundHop) -> None:
        if self.background is handle:
            self.background = None
            self.capturer.store = HopStore()

    def _hop(
        self,
        client: GatewayConnection,
        store: HopStore,
        gpu_class: str,
        code: str,
        timeout_s: float | None,
        eager: bool,
        rebuild: tuple[str, ...],
        files: bool,
        packages: bool,
    ):
        sent = self._send(client, store, gpu_class, code, eager, rebuild, files, packages)
        outcome = self._run_sent(client, sent, timeout_s)
        home = self._fetch_home(client, sent, outcome)
        return self._settle(client, sent, outcome, home)

    def _send(
        self,
        client: GatewayConnection,
        store: HopStore,
        gpu_class: str,
        code: str,
        eager: bool,
        rebuild: tuple[str, ...],
        files: bool,
        packages: bool,
    ) -> Sent:
        """Steps 1-3: capture the namespace (and the working directory) and send what the gateway lacks. Nothing of
        the namespace is read after this returns."""
        t0 = time.monotonic()
        plan = Plan()
        tree = self.files.send(client, store) if files else None
        limit_s = recipe_max_s()
        namespace = user_namespace(self.shell)
        reach = None if eager else self._reach([code], namespace)
        # Only a name the cell reaches gets a recipe, or one --rebuild names: a hop re-runs nothing else.
        targets = None if reach is None else reach | set(rebuild)

        def recipes(unpicklable: Mapping[str, Any]) -> dict[str, Any]:
            # Read the history only when the cell reaches something that cannot be pickled (recompute.py: the
            # runtime re-runs the recipes).
            nonlocal plan
            wanted = unpicklable.keys() if targets is None else unpicklable.keys() & targets
            plan = Plan()
            if wanted:
                plan = self.cells.plan(
                    unpicklable, limit_s=limit_s, targets=targets, forced=rebuild, namespace=namespace
                )
            # The runtime installs what of this environment it lacks, and names what it cannot, before the cell runs
            # (runtime/src/packages.ts); without it the runtime leaves its workers' packages as they are.
            return {**plan.meta(), **({"environment": record_environment()} if packages else {})}

        module_meta = self.module_state.outgoing()

        def capture(reach: frozenset[str] | None) -> Capture:
            return self.capturer.capture(
                namespace, meta=lambda u: {**recipes(u), **module_meta}, reach=reach, files=tree
            )

        cap = capture(reach)
        if reach is not None:
            # The recipes the runtime re-runs before the cell reach names too; their groups must have been read.
            recipe_code = _recipe_code(cap.manifest)
            full = self._reach(recipe_code, namespace, reach) if recipe_code else reach
            if full is None or not full.isdisjoint(cap.unverified):
                cap = capture(full)
            reach = full
        self._keep_remote_blobs(store)
        for line in [*plan.warnings(cap.unpicklable), *self.module_state.take_notes()]:
            self.presenter.warn(line)
        for name in rebuild:
            if name not in cap.unpicklable:
                self.presenter.warn(
                    f"kernelhop: --rebuild {name!r} does nothing: no variable of that name here fails to pickle"
                )
        t1 = time.monotonic()
        cap = self._upload(client, store, cap, lambda: capture(None))
        return Sent(
            store, cap, reach, tree, files, gpu_class, code, run_labels(self.shell), capture, t0, t1, time.monotonic()
        )

    def _run_sent(
        self, client: GatewayConnection, sent: Sent, timeout_s: float | None, *, recapture: bool = True
    ) -> Outcome:
        """Step 4: run the sent state and report its events. ``recapture``: where the gateway lost blobs this kernel
        no longer holds, capture the namespace anew (a background hop cannot: the namespace has moved on)."""
        try:
            return self._run(client, sent, timeout_s)
        except GatewayError as e:
            if e.code != "missing_blobs":
                raise
            # The gateway lacks blobs we took it to hold (its store was wiped?): send just those and run again;
            # only where this kernel does not hold one of them either, forget what we knew and send everything.
            store = sent.store
            if e.missing and all(store.has(Digest.parse(d)) for d in e.missing):
                client.known.difference_update(e.missing)
                client.put_blobs({d: store.get(Digest.parse(d)) for d in e.missing})
            elif not recapture:
                raise HopError(
                    "the gateway lost blobs of the state this background hop sent, and the kernel has moved on "
                    "since; run the cell again. The local namespace is unchanged"
                ) from None
            else:
                client.known.clear()
                sent.tree = self.files.send(client, store) if sent.files else None
                sent.cap = self._upload(client, store, sent.cap, lambda: sent.capture(None))
            return self._run(client, sent, timeout_s)

    def _settle(
        self,
        client: GatewayConnection,
        sent: Sent,
        outcome: Outcome,
        home: Home | None,
        *,
        refused: frozenset[str] = frozenset(),
        module_state: bool = True,
    ):
        """Steps 7 and after: apply what came home (but ``refused`` names), bring the files home, report; returns
        the cell's result or raises the remote cell's error."""
        if home is not None:
            self._apply_home(home, sent.cap, refused=refused, module_state=module_state)
        if sent.tree is not None and outcome.done["snapshot"] != str(sent.cap.digest):
            came = Manifest.from_bytes(sent.store.get(Digest.parse(outcome.done["snapshot"])))
            self.files.bring_home(client, came.files, sent.gpu_class)
        t4 = time.monotonic()
        remote = outcome.done.get("timings")
        self.last_timings = {
            **{
                f"runtime_{k}": float(v)
                for k, v in (remote.items() if isinstance(remote, dict) else ())
                if isinstance(v, int | float)
            },
            "capture_s": sent.t1 - sent.t0,
            "upload_s": sent.t2 - sent.t1,
            "queue_s": outcome.queue_s,
            "remote_s": outcome.remote_s,
            "home_s": t4 - outcome.ended_at,
            "total_s": t4 - sent.t0,
        }
        raised = outcome.error is not None or outcome.done.get("status") == "error"
        self.presenter.finished(self.last_timings, "error" if raised else "ok")
        if raised:
            raise remote_cell_error(sent.gpu_class, outcome.error or {})
        return outcome.result

    # -- steps ------------------------------------------------------------------------------------------------

    def _upload(
        self, client: GatewayConnection, store: HopStore, cap: Capture, read_all: Callable[[], Capture]
    ) -> Capture:
        """Send the chunks the gateway lacks, then the manifest: nothing may name what is not there yet. Returns
        the capture sent: ``cap``, or, where the gateway lacks chunks ``cap`` took unread from an earlier capture
        (groups out of the cell's reach), ``read_all()``'s."""
        chunks = sorted(str(d) for d in cap.manifest.blob_digests())
        manifest = str(cap.digest)
        lacking = set(client.find_missing([*chunks, manifest]))
        if cap.unverified and any(not store.has(Digest.parse(d)) for d in lacking if d != manifest):
            cap = read_all()
            chunks = sorted(str(d) for d in cap.manifest.blob_digests())
            manifest = str(cap.digest)
            lacking = set(client.find_missing([*chunks, manifest]))
        self.presenter.phase("upload", total_bytes=sum(Digest.parse(d).size for d in chunks if d in lacking))
        client.put_blobs({d: store.get(Digest.parse(d)) for d in chunks if d in lacking}, self.presenter.progress)
        if manifest in lacking:
            client.put_blobs({manifest: store.get(cap.digest)})
        return cap

    def _reach(
        self, cells: list[str], namespace: Mapping[str, Any], start: frozenset[str] = frozenset()
    ) -> frozenset[str] | None:
        """``start`` and the names the cells can reach (kernelhop_snapshot.reach); None for all of them."""
        try:
            sources = [self.shell.transform_cell(code) for code in cells]
        except Exception:
            return None  # IPython could not read the cell: the runtime will say why, with the whole state there
        names = set(start)
        for source in sources:
            reached = cell_reach(source, namespace, globals_dict=self.shell.user_global_ns)
            if reached is None:
                return None
            names |= reached
        return frozenset(names)

    def _run(self, client: GatewayConnection, sent: Sent, timeout_s: float | None) -> Outcome:
        # timeout_s 0 means none, as in the runtime protocol's Assignment.
        notebook, cell = sent.labels
        run = client.run(
            session=self.session,
            gpu_class=sent.gpu_class,
            code=sent.code,
            manifest=str(sent.cap.digest),
            timeout_s=timeout_s or 0,
            reach=sent.reach,
            notebook=notebook,
            cell=cell,
        )
        self.presenter.phase("queued")
        out = Outcome()
        sent = time.monotonic()
        started_at: float | None = None
        noticed = False
        try:
            while True:
                ev = run.next_event()
                now = time.monotonic()
                if ev is None:
                    self.presenter.tick()
                    if started_at is None and not noticed and now - sent > QUEUED_NOTICE_S:
                        noticed = True
                        self.presenter.waiting()
                    if timeout_s and started_at is not None and now - started_at > timeout_s + TIMEOUT_SLACK_S:
                        run.cancel(CANCEL_WAIT_S)
                        raise GatewayError(
                            "timeout",
                            f"the cell ran past --timeout {timeout_s:g} s and the gateway did not stop it; "
                            "the local namespace is unchanged",
                        )
                    continue
                kind = ev.get("event")
                if kind == "done":
                    out.done = ev
                    break
                if kind == "started":
                    started_at = now
                    self._started = True
                    self.presenter.started(ev)
                    out.started = ev
                    out.queue_s = now - sent
                elif kind in ("stream", "display"):
                    self.presenter.output(ev)
                elif kind == "result":
                    out.result = RemoteResult(ev.get("data") or {}, ev.get("metadata") or {})
                elif kind == "error":
                    out.error = ev
                elif kind == "queued":
                    self.presenter.queued(ev.get("position"))
                elif kind == "progress":
                    self.presenter.remote_progress(ev)
        except KeyboardInterrupt:
            run.cancel(CANCEL_WAIT_S)
            raise
        except GatewayError as e:
            if e.code != "connection_lost" or started_at is None:
                raise
            others = [u for u in self.gateways.urls if u != client.url]
            raise GatewayError(
                "gateway_lost",
                f"the gateway at {client.url} went away while the cell ran on runtime "
                f"{out.started.get('runtime') or '?'}; what it did there is lost and the local namespace is unchanged. "
                + (
                    f"The next %%gpu cell goes through the gateway at {others[0]}."
                    if others
                    else "Run the cell again once the gateway is back."
                ),
            ) from None
        out.ended_at = time.monotonic()
        out.remote_s = out.ended_at - (started_at if started_at is not None else sent)
        if not isinstance(out.done.get("snapshot"), str):
            raise GatewayError("bad_reply", "the gateway's `done` reply names no snapshot")
        return out

    def _fetch_home(self, client: GatewayConnection, sent: Sent, outcome: Outcome) -> Home | None:
        """Steps 5-7 but the last: fetch and restore the changed groups into a scratch dict (None: the cell changed
        nothing a snapshot holds). The namespace is not touched."""
        self.presenter.phase("home")
        runtime = str(outcome.started.get("runtime") or "?")
        manifest, store, cap = outcome.done["snapshot"], sent.store, sent.cap
        if manifest == str(cap.digest):
            return None
        try:
            digest = Digest.parse(manifest)
            if not store.has(digest):
                store.put(digest, client.get_blobs([manifest])[manifest])
            new = Manifest.from_bytes(store.get(digest))
            changes = diff(cap.manifest, new)
            check_result(cap.manifest, changes, sent.reach, runtime)  # before anything of it is fetched or unpickled
            wanted = {d for g in changes.changed_groups for d in g.blob_digests()}
            fetched = client.get_blobs(sorted(str(d) for d in store.missing(wanted)))
            for text, data in fetched.items():
                store.put(Digest.parse(text), data)
            # Notebook functions get the kernel's namespace as their globals, as if defined here. A group this
            # kernel cannot unpickle (a module only the runtime has) comes home as RemoteOnly placeholders rather
            # than failing the hop; the next hop sends it back as it was.
            restored = self.capturer.restore(
                new, groups=changes.changed_groups, globals=self.shell.user_ns, keep_unrestorable="runtime"
            )
            self._keep_remote_blobs(store)
            apply_module_state = self.module_state.incoming(new.meta)
        except KernelhopError:
            raise
        except Exception as e:
            raise HopError(
                f"the cell ran, but what it made could not be brought home ({type(e).__name__}: {e}); "
                "the local namespace is unchanged"
            ) from e
        return Home(new, changes, restored, apply_module_state)

    def _apply_home(
        self, home: Home, cap: Capture, *, refused: frozenset[str] = frozenset(), module_state: bool = True
    ) -> None:
        """Step 7's last part, in one step: changed and new names in, deleted names out (but ``refused``), then
        the module state (unless not ``module_state``)."""
        new, changes = home.manifest, home.changes
        restored = {k: v for k, v in home.restored.items() if k not in refused}
        with _sigint_deferred():
            self.shell.user_ns.update(restored)
            for name in changes.deleted_names:  # diff never lists a name either side could not capture
                if name not in refused:
                    self.shell.user_ns.pop(name, None)
            if module_state:
                home.apply_module_state()
        for line in self.module_state.take_notes():
            self.presenter.warn(line)
        left = {n for n in new.unpicklable if n not in cap.unpicklable}
        for name in sorted(left - self._left_on_runtime):
            self.presenter.warn(
                f"kernelhop: variable {name!r} did not come home: {new.unpicklable[name]['reason']}; it stays on "
                "the runtime for the next %%gpu cells of this session (delete it there to end it)"
            )
        self._left_on_runtime = left
        for name, value in sorted(restored.items()):
            if isinstance(value, RemoteOnly):
                self.presenter.warn(
                    f"kernelhop: variable {name!r} stays on the runtime: this kernel cannot rebuild it "
                    f"({value.entry['reason']}); %%gpu cells still get it, using it here raises an error"
                )

    def _keep_remote_blobs(self, store: HopStore) -> None:
        needed = {d for group in self.capturer.remote_groups() for d in group.blob_digests()}
        self._remote_blobs = {d: self._remote_blobs[d] if d in self._remote_blobs else store.get(d) for d in needed}


# -- helpers ------------------------------------------------------------------------------------------------------


def _recipe_code(manifest: Manifest) -> list[str]:
    """The statements the worker replays before the cell (recompute.py, Plan.meta)."""
    recipes = manifest.meta.get(META_KEY)
    steps = recipes.get("steps") if isinstance(recipes, dict) else None
    return [code for code in steps if isinstance(code, str)] if isinstance(steps, list) else []


def session_line(status: dict[str, Any]) -> str:
    """The gateway's `session_status` in words: "warm on rt-1 for 42 s more", "evicted", ..."""
    state = status.get("state")
    where = f"{status.get('gpu_class')} on {status.get('runtime')}"
    if state == "warm":
        return f"warm on {status.get('runtime')} ({status.get('gpu_class')}) for {status.get('warm_s_left')} s more"
    if state == "running":
        return f"a cell is running, {where}"
    if state == "queued":
        return f"a cell waits for a {status.get('gpu_class')} (position {status.get('position')})"
    cold = "the next %%gpu cell restores its state cold, on any runtime"
    if state == "evicted":
        return f"evicted from {where} {status.get('ago_s')} s ago (another session needed the GPU); {cold}"
    if state == "expired":
        return f"its warm worker on {where} ended after its grace {status.get('ago_s')} s ago; {cold}"
    if state == "lost":
        return f"runtime {status.get('runtime')} went away {status.get('ago_s')} s ago; {cold}"
    return f"no warm worker; {cold}"


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold an interrupt until the namespace is fully updated, so a hop never applies half of what it brought."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt
