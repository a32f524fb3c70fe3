"""The worker's command loop: restore a snapshot, run one cell, capture, report."""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import io
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
from kernelhop_snapshot.module_state import WorkerModuleState
from google.protobuf import json_format
from kernelhop_proto import PROTOCOL, IncompatiblePeer, agree, decode_tagged, offer, to_json
from kernelhop_proto.v1 import capabilities_pb2, worker_pb2

from .channel import EventChannel, StreamWriter
from .packages import EnvironmentCheck
from .shell import WorkerShell
from .workdir import WorkDir, remove_all

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


def parse_command_line(line: bytes) -> dict[str, Any]:
    """One command of the runtime's (a JSON object on a line); anything else raises ValueError."""
    try:
        command = json.loads(line)
    except RecursionError:
        # Nesting deeper than the interpreter's stack: escaping this would end the thread that reads commands.
        raise ValueError("a command nests too deeply") from None
    if not isinstance(command, dict):
        raise ValueError("a command is a JSON object")
    # Held to the schema (proto/kernelhop/v1/worker.proto): a field the runtime renamed or retyped fails here.
    decode_tagged(worker_pb2.WorkerCommand, "op", command)
    return command


def _watch_commands(fd: int, commands: queue.Queue[dict[str, Any]], channel: EventChannel) -> None:
    with os.fdopen(fd, "rb", buffering=0) as raw:
        for line in iter(raw.readline, b""):
            if not line.strip():
                continue
            try:
                command = parse_command_line(line)
            except ValueError as exc:
                # run_id null: this belongs to no run, even while one is going on.
                channel.emit("failed", run_id=None, code="bad_command", message=f"unreadable command line: {exc}")
                continue
            commands.put(command)
    # The runtime closed our stdin (or died): nothing is left to serve, and no worker may outlive it.
    remove_all()
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
        # The kernel's working directory, laid out for this session's cells (workdir.py).
        self._files = WorkDir()
        self._environment = EnvironmentCheck()
        if "matplotlib" in sys.modules:
            self._enable_inline_figures()
        # Random generators, environment and library options: the kernel's before each cell, changes sent home.
        # Made after the preloads and the inline backend, so its start-up values are those no session touched.
        self._module_state = WorkerModuleState()

    def _enable_inline_figures(self) -> None:
        try:
            self._shell.enable_matplotlib("inline")
        except Exception as exc:
            print(f"kernelhop worker: inline figures unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)

    def serve(self, commands: queue.Queue[dict[str, Any]]) -> None:
        agreed = False
        while True:
            command = commands.get()
            op = command.get("op")
            if op == "hello":
                agreed = self._hello(command)
            elif not agreed:
                # What a runtime sends before agreeing is not held to any agreement: refused, not guessed at.
                self._channel.emit(
                    "failed",
                    code="incompatible",
                    message=f"{op!r} before the hello: the runtime's first command is hello ({PROTOCOL}); "
                    "this worker needs a runtime of its own kernelhop installation",
                )
            elif op == "run":
                self.run(command)
            else:
                self._channel.emit(
                    "failed", code="bad_command", message=f"unknown op {op!r}; this worker knows 'hello' and 'run'"
                )

    def _hello(self, command: dict[str, Any]) -> bool:
        """The pipes' hello (worker.proto): answer with this worker's offer and obey the agreement from now on."""
        mine = offer([])
        fields = {k: v for k, v in command.items() if k != "op"}
        try:
            theirs = json_format.ParseDict(fields, capabilities_pb2.Capabilities(), ignore_unknown_fields=True)
            agreed = agree(mine, theirs, "the runtime")
        except (json_format.ParseError, IncompatiblePeer) as exc:
            self._channel.emit("failed", code="incompatible", message=str(exc))
            return False
        self._channel.max_line_bytes = int(agreed.max_frame_bytes)
        self._channel.emit("hello", **to_json(mine))
        return True

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
            packages = command.get("packages")
            packages = packages if isinstance(packages, dict) else {}
            # Before the restore: unpickling imports the kernel's packages.
            self._environment.use_overlay(packages.get("overlay"))
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
            rebuilt = self._rebuild(manifest)
            self._module_state.before_cell(manifest.meta)  # last, so the recipes do not draw from the generators
            self._say_module_notes()
            mismatch = self._environment.describe(manifest.meta, packages.get("notes") or {})
            if mismatch:
                print(mismatch, file=self._stderr, flush=True)
            timings["restore_s"] = time.perf_counter() - started
            self._channel.emit("restored")

            started = time.perf_counter()
            ok = self._run_cell(code)
            module_meta = self._module_state.after_cell()
            self._say_module_notes()
            timings["run_s"] = time.perf_counter() - started
            if not ok and self._hidden:
                self._explain_hidden()

            started = time.perf_counter()
            self._current = None
            self._stay_here(rebuilt, manifest)
            try:
                namespace = user_namespace(self._shell)
                self._hidden = self._hidden_to_keep(namespace)
                captured = self._capturer.capture(
                    namespace,
                    parent=parent,
                    keep=[g for g, _ in self._hidden.values()],
                    meta=module_meta,
                    files=self._files.capture(self._store, self._stderr),
                )
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
        # Files first: the notebook's own modules, which unpickling may import, come with them.
        self._files.enter(manifest.files, self._store.get)
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

    def _say_module_notes(self) -> None:
        for note in self._module_state.take_notes():
            print(note, file=self._stderr, flush=True)
        self._channel.flush()

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
        hidden = {n for g, _ in self._hidden.values() for n in g.names}
        named = sorted(hidden.intersection(_missing_names(self._last_error)))
        if named:
            print(
                f"kernelhop: {', '.join(named)} {'was' if len(named) == 1 else 'were'} not restored on the runtime: "
                "this cell reached it without naming it in its code (through a library that reads the notebook's "
                "globals?). Run the cell with `%%gpu CLASS --eager` to restore the whole state first.",
                file=self._stderr,
                flush=True,
            )
            self._channel.flush()

    def _rebuild(self, manifest: Manifest) -> dict[str, Any]:
        """Give each name the kernel could not pickle its object rebuilt by the kernel's recipe, else a placeholder;
        returns the rebuilt objects by name.

        The recipes (manifest meta "recompute", made by kernelhop/client/recompute.py) are the kernel's statements that
        made the objects and used them since: the steps run here in order, each once, in the user namespace, with
        the cell's interrupt (what they print is dropped: it was shown when they ran), and a name is rebuilt when
        every step it needs ran. Whatever else the steps bind on the way (a `with` block's body, a value a use returned) is put back, so only the rebuilt
        names change. On failure (an exception, the name left unbound, another type than the kernel's) the name
        keeps a placeholder whose error names it, the code and the cause, and the cell's stderr says so. A name
        without a recipe gets a placeholder even where this warm worker holds an object of its own under it: that
        object is not the kernel's.
        """
        user_ns = self._shell.user_ns
        for name, entry in manifest.unpicklable.items():
            user_ns[name] = Placeholder(name, entry["type"], entry["reason"])
        steps, needs = _read_recipes(manifest.meta.get("recompute"), manifest.unpicklable)
        if not needs:
            return {}
        before = dict(user_ns)
        failed: dict[str, str] = {}  # name -> why it was not rebuilt
        saved = sys.stdout, sys.stderr
        # What the replayed statements print was shown when they ran in the kernel: not again in this cell.
        sys.stdout = sys.stderr = io.StringIO()
        try:
            for index, code in enumerate(steps):
                wanting = [n for n, wanted in needs.items() if index in wanted and n not in failed]
                if not wanting:
                    continue
                if self._interrupts.pending:
                    why = "the run was interrupted"  # cancelled: the cell will not start either
                else:
                    why = self._run_step(code)
                    if why is None:
                        continue
                    why = f"re-running `{code}` failed: {why}"
                failed.update((n, why) for n in wanting)
            rebuilt: dict[str, Any] = {}
            for name in needs:
                if name in failed:
                    continue
                value = user_ns.get(name)
                made, held = type_name(value), manifest.unpicklable[name]["type"]
                if name not in user_ns or type(value) is Placeholder:
                    failed[name] = f"running its recipe did not bind {name!r}"
                elif made != held:
                    failed[name] = (
                        f"its recipe made {name!r} a {made}, but the kernel's is a {held} (made another way since?)"
                    )
                else:
                    rebuilt[name] = value
            for key in before.keys() | user_ns.keys():
                if key in rebuilt:
                    continue
                if key not in before:
                    del user_ns[key]
                elif user_ns.get(key, before) is not before[key]:
                    user_ns[key] = before[key]
            for name, why in sorted(failed.items()):
                entry = manifest.unpicklable[name]
                user_ns[name] = Placeholder(name, entry["type"], f"{entry['reason']}; rebuilding it here: {why}")
                print(f"kernelhop: variable {name!r} could not be rebuilt on the runtime: {why}", file=self._stderr)
        finally:
            self._channel.flush()
            sys.stdout, sys.stderr = saved
        return rebuilt

    def _run_step(self, code: str) -> str | None:
        """Run one recipe step in the user namespace; None when it ran, else why not."""
        try:
            self._interrupts.in_user_code = True
            try:
                exec(compile(code, "<kernelhop recipe>", "exec"), self._shell.user_ns)
            finally:
                self._interrupts.in_user_code = False
        except KeyboardInterrupt:
            self._interrupts.pending = True
            return "the run was interrupted"
        except Exception as exc:
            return _describe(exc)
        return None

    def _stay_here(self, rebuilt: dict[str, Any], manifest: Manifest) -> None:
        """Put the kernel's placeholders back over rebuilt objects the cell did not rebind, before the capture: a
        rebuilt object is a stand-in for the kernel's own (a live widget, an open file), and the kernel keeps that
        one even where the stand-in would pickle here."""
        user_ns = self._shell.user_ns
        for name, value in rebuilt.items():
            if user_ns.get(name, None) is value:
                entry = manifest.unpicklable[name]
                user_ns[name] = Placeholder(name, entry["type"], entry["reason"])

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


def _read_recipes(meta: Any, unpicklable: dict[str, Any]) -> tuple[list[str], dict[str, set[int]]]:
    """The steps of the kernel's recipes and, for each unpicklable name with one, the steps it needs (all of them
    valid, else the name gets none: it keeps its placeholder)."""
    steps = meta.get("steps") if isinstance(meta, dict) else None
    names = meta.get("names") if isinstance(meta, dict) else None
    if not isinstance(steps, list) or not all(isinstance(c, str) for c in steps) or not isinstance(names, dict):
        return [], {}
    needs = {}
    for name, wanted in names.items():
        if name in unpicklable and isinstance(wanted, list) and wanted:
            if all(isinstance(i, int) and 0 <= i < len(steps) for i in wanted):
                needs[name] = set(wanted)
    return steps, needs


class LazyRestoreError(Exception):
    """A capture cannot carry a lazily held group as it came, nor capture it: the group was never restored."""


def _missing_names(error: BaseException | None) -> set[str]:
    """The variable names a lookup that failed was for: a NameError's name, or a KeyError's key (a library
    reading the notebook's globals by name), in the error or the ones it chained from. Never words of a message."""
    names: set[str] = set()
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, NameError) and isinstance(error.name, str):
            names.add(error.name)
        elif isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
            names.add(error.args[0])
        error = error.__cause__ or error.__context__
    return names


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
    # What start-up made (preloaded modules, the shell: ~200,000 objects with torch) lives as long as the worker, so
    # the cyclic collector stops walking it: the shell's reset before a cold restore runs a full collection, 0.09 s
    # of it on the 2-core VM (benchmarks/RESULTS.md, "The worker's cold restore"), and the user's cells run others.
    gc.collect()
    gc.freeze()
    commands: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(
        target=_watch_commands, args=(command_fd, commands, channel), name="kernelhop-stdin", daemon=True
    ).start()
    channel.emit("ready", pid=os.getpid(), python=sys.version.split()[0])
    worker.serve(commands)
