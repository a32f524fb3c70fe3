"""The worker's command loop: restore a snapshot, run one cell, capture, report."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from kernelhop_snapshot import (
    Capturer,
    CorruptBlobError,
    Digest,
    DirectoryBlobStore,
    Group,
    Manifest,
    Placeholder,
    RemoteOnly,
    diff,
    user_namespace,
)
from kernelhop_snapshot.blobstore import Buffer
from kernelhop_snapshot.capturer import type_name
from kernelhop_snapshot.errors import MissingBlobError
from kernelhop_snapshot.reach import identifiers

from .channel import EventChannel, StreamWriter
from .shell import WorkerShell

EVENT_FD = 3
# Imported while the worker waits for its first cell, so a restore does not pay for them (torch alone takes 1-2 s).
# Each is imported only where installed; KERNELHOP_PRELOAD replaces the list, and then a module missing is reported.
DEFAULT_PRELOAD = ("numpy", "pandas", "torch")


class Interrupts:
    """SIGINT raises KeyboardInterrupt only inside the user's code.

    During restore and capture it is remembered instead, so a cancel never leaves half-restored
    state or a half-written snapshot; the cell then does not start. It also never interrupts a
    line being written to the event channel."""

    def __init__(self, channel: EventChannel) -> None:
        self._channel = channel
        self.in_user_code = False
        self.pending = False
        channel.on_idle = self._raise_deferred
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.in_user_code and not self._channel.busy:
            raise KeyboardInterrupt
        self.pending = True

    def _raise_deferred(self) -> None:
        if self.pending and self.in_user_code:
            self.pending = False
            raise KeyboardInterrupt


def _preload(setting: str | None) -> None:
    if setting is None:
        modules = [m for m in DEFAULT_PRELOAD if importlib.util.find_spec(m) is not None]
    else:
        modules = [m.strip() for m in setting.split(",") if m.strip()]
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional module must not keep the worker from starting
            print(f"kernelhop worker: could not preload {name!r}: {type(exc).__name__}: {exc}", file=sys.stderr)


def _isolate_fds() -> tuple[int, int]:
    """Take the command pipe (fd 0) and event pipe (fd 3) away from the user's code.

    A subprocess started by the cell (`os.system`, `!cmd`) inherits fds 0-2; reading fd 0 would
    steal our commands and writing fd 3 would corrupt our events. The duplicates are
    non-inheritable (PEP 446), and fd 0 becomes /dev/null."""
    commands = os.dup(0)
    events = os.dup(EVENT_FD)
    os.close(EVENT_FD)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return commands, events


def _watch_commands(fd: int, commands: queue.Queue[dict[str, Any]], channel: EventChannel) -> None:
    with os.fdopen(fd, "rb", buffering=0) as raw:
        for line in iter(raw.readline, b""):
            if not line.strip():
                continue
            try:
                command = json.loads(line)
                if not isinstance(command, dict):
                    raise ValueError("a command is a JSON object")
            except ValueError as exc:
                # run_id null: this belongs to no run, even while one is going on.
                channel.emit("failed", run_id=None, code="bad_command", message=f"unreadable command line: {exc}")
                continue
            commands.put(command)
    # The runtime closed our stdin (or died): nothing is left to serve, and no worker may outlive it.
    os._exit(0)


class HandedOverStore:
    """The blobs the runtime handed this worker (read-only to it), and the ones it writes for the runtime to take.

    The worker never sees the runtime's cache: the runtime links the verified blobs a run needs into ``given`` and,
    after the run, verifies what the worker wrote to ``out`` before anything of it enters the cache."""

    def __init__(self, given: str, out: str) -> None:
        self._given = DirectoryBlobStore(given, durable=False)
        self._out = _FlatBlobStore(out, durable=False)

    def has(self, digest: Digest) -> bool:
        return self._given.has(digest) or self._out.has(digest)

    def missing(self, digests: Iterable[Digest]) -> list[Digest]:
        return [d for d in dict.fromkeys(digests) if not self.has(d)]

    def get(self, digest: Digest) -> bytes:
        try:
            return self._given.get(digest)
        except MissingBlobError:
            return self._out.get(digest)

    def read_into(self, digest: Digest, out: memoryview) -> None:
        try:
            self._given.read_into(digest, out)
        except MissingBlobError:
            self._out.read_into(digest, out)

    def put(self, digest: Digest, data: Buffer) -> None:
        if not self.has(digest):
            self._out.put(digest, data)

    def put_hashed(self, digest: Digest, data: Buffer) -> None:
        self._out.put_hashed(digest, data)


class _FlatBlobStore(DirectoryBlobStore):
    """Blobs as ``<root>/<hash>``: the runtime opens what the worker wrote by a name with no directory the worker
    could have swapped for a link elsewhere. (Temporary files still go to a fan-out directory, then move here.)"""

    def path(self, digest: Digest) -> str:
        return os.path.join(self.root, digest.hash)


class Worker:
    def __init__(self, store: HandedOverStore, channel: EventChannel) -> None:
        self._channel = channel
        self._store = store
        self._capturer = Capturer(self._store, track_writes=True)
        self._interrupts = Interrupts(channel)
        self._stdout = StreamWriter(channel, "stdout")
        self._stderr = StreamWriter(channel, "stderr")
        self._shell = WorkerShell.instance(channel=channel)
        # The manifest the shell's namespace matches right now (after a capture), or None when unknown.
        self._current: Manifest | None = None
        # Groups of the current snapshot out of the namespace (lazy restore), by Group.key: never restored here
        # (objects None), or restored by an earlier run and hidden since, with their objects by name.
        self._hidden: dict[tuple[Any, ...], tuple[Group, dict[str, Any] | None]] = {}
        self._last_error: BaseException | None = None
        if "matplotlib" in sys.modules:
            self._enable_inline_figures()

    def _enable_inline_figures(self) -> None:
        try:
            self._shell.enable_matplotlib("inline")
        except Exception as exc:
            print(f"kernelhop worker: inline figures unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)

    def serve(self, commands: queue.Queue[dict[str, Any]]) -> None:
        while True:
            command = commands.get()
            op = command.get("op")
            if op == "run":
                self.run(command)
            else:
                self._channel.emit("failed", code="bad_command", message=f"unknown op {op!r}; this worker knows 'run'")

    def run(self, command: dict[str, Any]) -> None:
        run_id, code, snapshot = command.get("run_id"), command.get("code"), command.get("snapshot")
        reach = command.get("reach")
        if not isinstance(run_id, str) or not isinstance(code, str) or not isinstance(snapshot, str):
            self._channel.emit(
                "failed", code="bad_command", message="run needs string fields run_id, code and snapshot"
            )
            return
        if reach is not None and not (isinstance(reach, list) and all(isinstance(n, str) for n in reach)):
            self._channel.emit("failed", code="bad_command", message="run's reach is a list of names, or null")
            return
        self._channel.run_id = run_id
        try:
            timings: dict[str, float] = {}
            started = time.perf_counter()
            try:
                parent = Digest.parse(snapshot)
                manifest = self._restore(parent, None if reach is None else frozenset(reach))
            except Exception as exc:
                # Whatever part of the namespace was replaced no longer matches any manifest.
                self._current = None
                corrupt = _corrupt_blob(exc)
                self._channel.emit(
                    "failed",
                    code="restore_failed",
                    message=f"could not restore snapshot {snapshot}: {_describe(exc)}",
                    # The runtime drops that cache entry, fetches it again and retries the run once.
                    corrupt_blob=None if corrupt is None else str(corrupt),
                )
                return
            self._rebuild(manifest)
            timings["restore_s"] = time.perf_counter() - started
            self._channel.emit("restored")

            started = time.perf_counter()
            ok = self._run_cell(code)
            timings["run_s"] = time.perf_counter() - started
            if not ok and self._hidden:
                self._explain_hidden()

            started = time.perf_counter()
            self._current = None
            try:
                namespace = user_namespace(self._shell)
                self._hidden = self._hidden_to_keep(namespace)
                captured = self._capturer.capture(namespace, parent=parent, keep=[g for g, _ in self._hidden.values()])
            except Exception as exc:
                self._channel.emit(
                    "failed",
                    code="capture_failed",
                    message=f"could not capture the namespace after the cell: {_describe(exc)}",
                )
                return
            self._current = captured.manifest
            timings["capture_s"] = time.perf_counter() - started
            self._channel.emit(
                "done",
                status="ok" if ok else "error",
                snapshot=str(captured.digest),
                new_blobs=[str(d) for d in captured.new_blobs],
                timings=timings,
            )
        finally:
            self._interrupts.pending = False
            self._channel.run_id = None

    def _restore(self, digest: Digest, reach: frozenset[str] | None) -> Manifest:
        """Make the shell's namespace the snapshot's, for the names in ``reach`` (None: all of them).

        A worker kept warm for a session still holds the namespace it captured after the last cell; then only
        the groups that differ are loaded (unchanged objects keep their identity, big arrays are not reread).
        Groups without a name in ``reach`` are hidden: out of the namespace until a cell reaches them, and each
        capture carries them as they came. One never restored is not read (the runtime did not fetch its chunks);
        one restored by an earlier run keeps its objects aside, and gets them back when reached unchanged. Hiding
        it matters: the kernel may send a group out of reach as it was at an earlier hop, unread since
        (Capturer.capture's ``reach``), so its objects here may be stale, and no cell may see them."""
        manifest = Manifest.from_bytes(self._store.get(digest))
        user_ns = self._shell.user_ns
        if self._current is None:
            self._shell.reset(new_session=False)
            self._hidden = {}
            changed = {g.key for g in manifest.groups}
        else:
            change = diff(self._current, manifest)
            self._current = None
            for name in change.deleted_names:
                user_ns.pop(name, None)
            changed = {g.key for g in change.changed_groups}
        now: list[Group] = []
        hidden: dict[tuple[Any, ...], tuple[Group, dict[str, Any] | None]] = {}
        for group in manifest.groups:
            reached = reach is None or not reach.isdisjoint(group.names)
            was_hidden = self._hidden.get(group.key)
            objects = None if was_hidden is None else was_hidden[1]
            if group.key in changed or (was_hidden is not None and objects is None):
                if reached:
                    now.append(group)
                else:
                    for name in group.names:
                        user_ns.pop(name, None)  # a warm worker's older object under a name whose group changed
                    hidden[group.key] = (group, None)
            elif objects is not None:
                if reached:
                    user_ns.update(objects)
                else:
                    hidden[group.key] = (group, objects)
            elif not reached:
                objects = {n: user_ns.pop(n) for n in group.names if n in user_ns}
                # RemoteOnly placeholders are restored again when reached: the capturer must know them to send
                # their group back as it came.
                keep = not any(isinstance(v, RemoteOnly) for v in objects.values())
                hidden[group.key] = (group, objects if keep else None)
        self._hidden = hidden
        # What the kernel made that this host cannot unpickle (a module only the kernel has, such as a local
        # utils.py) becomes RemoteOnly placeholders rather than failing the run: the cell runs without it, and the
        # capture after it sends that group back unchanged, so the kernel keeps its object.
        restored = self._capturer.restore(manifest, groups=now, globals=user_ns, keep_unrestorable="kernel")
        user_ns.update(restored)
        for name, value in sorted(restored.items()):
            if isinstance(value, RemoteOnly):
                print(
                    f"kernelhop: variable {name!r} stays in the kernel: this runtime cannot rebuild it "
                    f"({value.entry['reason']}); using it in this cell raises an error",
                    file=self._stderr,
                    flush=True,
                )
        # Unpicklable names get their placeholders or rebuilt objects from _rebuild, next.
        return manifest

    def _hidden_to_keep(self, namespace: dict[str, Any]) -> dict[tuple[Any, ...], tuple[Group, dict[str, Any] | None]]:
        """The hidden groups a capture carries as they came: those the cell bound none of the names of.

        A cell that bound all of a group's names replaced it. One that bound only some (it can do so only through
        the namespace dict, which cell_reach would have seen in its code) leaves the others of that group neither
        in the namespace nor sendable as they came (the group would bring the bound names back too): that capture
        fails, and the kernel keeps its state."""
        keep = {}
        for key, (group, objects) in self._hidden.items():
            bound = [n for n in group.names if n in namespace]
            if not bound:
                keep[key] = (group, objects)
            elif len(bound) < len(group.names):
                rest = ", ".join(n for n in group.names if n not in namespace)
                raise LazyRestoreError(
                    f"the cell rebound {', '.join(bound)}, which shares objects with {rest}; {rest} was not "
                    "restored on the runtime because the cell's code does not name it. Run the cell with "
                    "`%%gpu CLASS --eager` to restore the whole state first"
                )
        return keep

    def _explain_hidden(self) -> None:
        """After a failed cell: if its error names variables kept out of the namespace, say why and what to do."""
        text = f"{self._last_error}" if self._last_error is not None else ""
        hidden = {n for g, _ in self._hidden.values() for n in g.names}
        named = sorted(hidden.intersection(identifiers(text)))
        if named:
            print(
                f"kernelhop: {', '.join(named)} {'was' if len(named) == 1 else 'were'} not restored on the runtime: "
                "this cell reached it without naming it in its code (through a library that reads the notebook's "
                "globals?). Run the cell with `%%gpu CLASS --eager` to restore the whole state first.",
                file=self._stderr,
                flush=True,
            )
            self._channel.flush()

    def _rebuild(self, manifest: Manifest) -> None:
        """Give each name the kernel could not pickle its object rebuilt by the kernel's recipe, else a placeholder.

        A recipe (manifest meta "recompute", made by kernelhop/recompute.py) is the statement that made the object
        in the kernel. It runs here in the user namespace, after the recipes it needs, with the cell's output
        streams and interrupt; a statement runs once for all the names it rebuilds, and whatever else it binds on
        the way (a `with` block's body) is put back, so only those names change. On failure (an exception, the name
        left unbound, another type than the kernel's) the name keeps a placeholder whose error names it, the code
        and the cause, and the cell's stderr says so. A name without a recipe gets a placeholder even where this
        warm worker holds an object of its own under it: that object is not the kernel's.
        """
        user_ns = self._shell.user_ns
        for name, entry in manifest.unpicklable.items():
            user_ns[name] = Placeholder(name, entry["type"], entry["reason"])
        recipes = manifest.meta.get("recompute")
        if not isinstance(recipes, dict):
            return
        targets: dict[str, list[str]] = {}  # code -> the names it rebuilds
        needs: dict[str, list[str]] = {}  # code -> the names it reads that must be rebuilt first
        for name, recipe in sorted(recipes.items()):
            if name in manifest.unpicklable and isinstance(recipe, dict) and isinstance(recipe.get("code"), str):
                code = recipe["code"]
                targets.setdefault(code, []).append(name)
                wanted = recipe.get("needs")
                deps = needs.setdefault(code, [])
                if isinstance(wanted, list):
                    deps.extend(n for n in wanted if isinstance(n, str))
        code_of = {n: code for code, names in targets.items() for n in names}
        order: list[str] = []
        seen: set[str] = set()

        def visit(code: str) -> None:
            # Depth first, needs before the code; a cycle (never made by the kernel) just runs in some order and
            # fails on a placeholder.
            if code in seen:
                return
            seen.add(code)
            for dep in needs[code]:
                if dep in code_of:
                    visit(code_of[dep])
            order.append(code)

        for code in targets:
            visit(code)

        rebuilt: set[str] = set()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self._stdout, self._stderr
        try:
            for code in order:
                if self._interrupts.pending:
                    break  # cancelled: the cell will not start, so nothing more is rebuilt
                names = targets[code]
                missing = [d for d in needs[code] if d in manifest.unpicklable and d not in rebuilt]
                why: str | None
                if missing:
                    why = f"it needs {missing[0]!r}, which could not be rebuilt"
                else:
                    why = self._run_recipe(code, names, manifest)
                    if why is None:
                        rebuilt.update(names)
                        continue
                for name in names:
                    entry = manifest.unpicklable[name]
                    reason = f"{entry['reason']}; rebuilding it here by re-running `{code}` failed: {why}"
                    user_ns[name] = Placeholder(name, entry["type"], reason)
                    print(f"kernelhop: variable {name!r} could not be rebuilt on the runtime: {why}", file=sys.stderr)
        finally:
            self._channel.flush()
            sys.stdout, sys.stderr = saved

    def _run_recipe(self, code: str, names: list[str], manifest: Manifest) -> str | None:
        """Run one recipe in the user namespace; None when it rebuilt ``names`` as the kernel has them, else why not."""
        user_ns = self._shell.user_ns
        before = dict(user_ns)
        why: str | None = None
        try:
            self._interrupts.in_user_code = True
            try:
                exec(compile(code, "<kernelhop recipe>", "exec"), user_ns)
            finally:
                self._interrupts.in_user_code = False
        except KeyboardInterrupt:
            self._interrupts.pending = True
            why = "the run was interrupted"
        except Exception as exc:
            why = _describe(exc)
        for key in before.keys() | user_ns.keys():
            if key in names:
                continue
            if key not in before:
                del user_ns[key]
            elif user_ns.get(key, before) is not before[key]:
                user_ns[key] = before[key]
        if why is not None:
            return why
        for name in names:
            value = user_ns.get(name)
            if name not in user_ns or type(value) is Placeholder:
                return f"running it did not bind {name!r}"
            made, held = type_name(value), manifest.unpicklable[name]["type"]
            if made != held:
                return f"it made {name!r} a {made}, but the kernel's is a {held} (made another way since?)"
        return None

    def _run_cell(self, code: str) -> bool:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self._stdout, self._stderr
        self._last_error = None
        try:
            if self._interrupts.pending:
                # Cancelled while restoring: the cell does not start, and says so as a local kernel would.
                self._interrupts.pending = False
                self._report_interrupt()
                return False
            self._interrupts.in_user_code = True
            try:
                result = self._shell.run_cell(code, store_history=False)
            finally:
                self._interrupts.in_user_code = False
            self._last_error = result.error_in_exec or result.error_before_exec
            return bool(result.success)
        except KeyboardInterrupt:
            # SIGINT landed outside run_code (e.g. while IPython transformed the cell).
            self._report_interrupt()
            return False
        finally:
            self._channel.flush()
            sys.stdout, sys.stderr = saved

    def _report_interrupt(self) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            self._shell.showtraceback()


class LazyRestoreError(Exception):
    """A capture cannot carry a lazily held group as it came, nor capture it: the group was never restored."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _corrupt_blob(exc: BaseException | None) -> Digest | None:
    """The blob whose bytes failed their digest somewhere in the chain of ``exc``, if one did."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CorruptBlobError):
            return exc.digest
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kernelhop_worker", description=__doc__)
    parser.add_argument("--given", required=True, help="blobs the runtime handed over: <dir>/<hash[0:2]>/<hash>")
    parser.add_argument("--out", required=True, help="where captured blobs go for the runtime to verify and take")
    args = parser.parse_args(argv)

    command_fd, event_fd = _isolate_fds()
    channel = EventChannel(event_fd)
    # ipykernel's way to get inline figures: matplotlib picks this backend when imported (so set it before
    # preloading), and the backend registers a post-execute hook that displays open figures after each cell.
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    _preload(os.environ.get("KERNELHOP_PRELOAD"))
    worker = Worker(HandedOverStore(args.given, args.out), channel)
    commands: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(
        target=_watch_commands, args=(command_fd, commands, channel), name="kernelhop-stdin", daemon=True
    ).start()
    channel.emit("ready", pid=os.getpid(), python=sys.version.split()[0])
    worker.serve(commands)
