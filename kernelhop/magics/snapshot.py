"""`%snapshot`: save, list, restore, fork, diff, log, share and auto-save the kernel's state (ARCHITECTURE.md,
"Snapshots, users and trust").

Uses the kernel's Hopper: its capturer (so saving after a cell moves only the chunks that changed), its chunk store and
its gateways, with the failover rule of hops (client/failover.py): a command that only reads is sent again through the
next gateway when its gateway is gone, one that writes (save, fork, share, revoke) only when it never reached it.
Load with `%load_ext kernelhop.magics.snapshot`, or through `%load_ext kernelhop` once the package registers it. Each
command has its own magic_arguments; list, diff, log and revoke run what the `kernelhop snapshot` command runs
(cli/snapshot_commands.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from kernelhop_snapshot import user_namespace

from ..cli import snapshot_commands
from ..client.gateway import KernelhopError
from ..client.hop import Hopper, _sigint_deferred
from ..client.hop_store import HopStore
from ..client.snapshots import (
    Opened,
    SnapshotError,
    Snapshots,
    short,
)
from ..config import kernelhop_home
from ..environment import describe_differences, differences, record_environment
from .hop_presenter import presenters_for

T = TypeVar("T")

# How long `%snapshot fork` waits for the new kernel to start and restore.
FORK_TIMEOUT_S = 120.0


# The subcommands of %snapshot, each a `_cmd_NAME` method with its own magic_arguments.
COMMANDS = ("save", "list", "restore", "fork", "diff", "log", "share", "revoke", "auto")


def notebook_path() -> str | None:
    """The notebook this kernel serves, as Jupyter tells kernels it starts (None outside Jupyter)."""
    return os.environ.get("JPY_SESSION_NAME") or None


@magics_class
class SnapshotMagics(Magics):
    def __init__(self, shell: Any, hopper: Hopper):
        super().__init__(shell)
        self.hopper = hopper
        # The snapshot this kernel's state follows (its last save or restore): the parent of the next save.
        self.head: str | None = None
        self.head_manifest: str | None = None
        # Index into In of the first cell not yet recorded in a snapshot.
        self.mark = len(self._inputs())
        self.auto = False
        # Forked kernels started from here; kept so their process handles live as long as this kernel.
        self.forks: list[Any] = []

    @contextmanager
    def store(self) -> Iterator[HopStore]:
        """A chunk store for this operation only (as a hop has): the capturer writes into it, and it is dropped
        afterwards so no GiBs stay held twice."""
        self.hopper.refuse_while_background("%snapshot")  # the capturer and its store are the hop's until then
        self.hopper.capturer.store = store = self.hopper.new_store()
        try:
            yield store
        finally:
            self.hopper.capturer.store = HopStore()

    def at_gateway(self, what: str, op: Callable[[Snapshots], T], *, writes: bool = False) -> T:
        """``op`` (`%snapshot WHAT`) through the kernel's gateways by the failover rule, in a store of its own."""
        with self.store() as store:
            return self.through(what, op, store, writes=writes)

    def through(self, what: str, op: Callable[[Snapshots], T], store: HopStore, *, writes: bool = False) -> T:
        return self.hopper.gateways.call(
            lambda client: op(Snapshots(client, store)), what=f"%snapshot {what}", writes=writes
        )

    def _inputs(self) -> list[str]:
        """The cells run so far as typed (magics not yet turned into Python), the running one last."""
        return list(self.shell.history_manager.input_hist_raw)

    @line_magic("snapshot")
    def snapshot(self, line: str) -> None:
        """Snapshots of this kernel's state: save, list, restore, fork, diff, log, share, revoke, auto.

        %snapshot save [NAME] [-m MESSAGE]     save the state (signed by you); NAME is a ref to it
        %snapshot list                         your snapshots and those shared with you
        %snapshot restore REF [--trust]        make this kernel's state the snapshot's
        %snapshot fork REF [--trust] [--here]  a new kernel holding that state (its connection file is printed),
                                               or with --here this kernel
        %snapshot diff A B                     names added, changed and removed, with sizes
        %snapshot log [REF]                    history (parents, author, time, cells run)
        %snapshot share REF --with USER|--link [--expires SECONDS]
        %snapshot revoke SHARE
        %snapshot auto on|off                  save after every cell (undo and time travel)

        REF is a ref name, a snapshot id (or 6+ of its first digits), or a link. Restoring runs the pickles inside,
        so a snapshot signed by someone you have not trusted needs --trust, after it says whose it is.
        """
        command, rest = (line.split(None, 1) + ["", ""])[:2]
        if command not in COMMANDS:
            given = f"unknown command {command!r}" if command else "no command"
            raise UsageError(f"%snapshot: {given}; use one of {', '.join(COMMANDS)} (%snapshot? says what each does)")
        handler = getattr(self, f"_cmd_{command}")
        # IPython's help formatter writes reST (`::` and an indent before the usage); an error reads plainer.
        usage = handler.parser.format_usage().replace("::", "").strip()
        if rest.split()[:1] in (["-h"], ["--help"]):
            raise UsageError(handler.parser.format_help())
        try:
            args = parse_argstring(handler, rest)
        except UsageError as e:
            raise UsageError(f"%{handler.parser.prog}: {e}\nusage: {usage}") from None
        try:
            handler(args)
        except SnapshotError:
            raise
        except KernelhopError as e:
            raise SnapshotError(str(e)) from None

    # -- commands ---------------------------------------------------------------------------------------------

    @magic_arguments("snapshot save")
    @argument("name", nargs="?", help="a ref name for it (optional)")
    @argument("-m", "--message", default="", help="what this state is")
    def _cmd_save(self, args: argparse.Namespace) -> None:
        # The running cell (the %snapshot line itself) is the last entry of In: it is not part of the state.
        sid = self.save(name=args.name, message=args.message, cells=self._inputs()[self.mark : -1])
        assert sid is not None
        print(f"saved snapshot {short(sid)}" + (f" as {args.name}" if args.name else "") + f" ({sid})")

    def save(self, *, name: str | None, message: str, cells: list[str], skip_unchanged: bool = False) -> str | None:
        """Capture and save; with `skip_unchanged`, None when the state is the last saved or restored one."""
        with self.store() as store:
            cap = self.hopper.capturer.capture(user_namespace(self.shell))
            if skip_unchanged and str(cap.digest) == self.head_manifest:
                self.mark = len(self._inputs())
                return None
            for var, reason in sorted(cap.unpicklable.items()):
                print(f"kernelhop: variable {var!r} is not in the snapshot: {reason}", file=sys.stderr)
            parents, environment = [self.head] if self.head else [], record_environment()

            def save(api: Snapshots) -> str:
                # Captured once: sent again through another gateway, the same state goes.
                return api.save(
                    cap.manifest,
                    cap.digest,
                    parents=parents,
                    message=message,
                    notebook=notebook_path(),
                    cells=cells,
                    environment=environment,
                    name=name,
                )

            sid = self.through("save", save, store, writes=True)
        self._moved_to(sid, str(cap.digest))
        return sid

    def _moved_to(self, sid: str, manifest: str) -> None:
        self.head, self.head_manifest = sid, manifest
        self.mark = len(self._inputs())

    @magic_arguments("snapshot list")
    def _cmd_list(self, args: argparse.Namespace) -> None:
        self.at_gateway("list", lambda api: snapshot_commands.ls(api, args))

    @magic_arguments("snapshot restore")
    @argument("ref", metavar="REF", help="a ref name, a snapshot id (or 6+ of its first digits), or a link")
    @argument("--trust", action="store_true", help="trust the snapshot's signer (after seeing who it is)")
    def _cmd_restore(self, args: argparse.Namespace) -> None:
        def restore(api: Snapshots) -> Opened:
            opened = api.open(args.ref, trust=args.trust)
            self.restore(api, opened)  # the namespace changes only once everything came: nothing to undo after
            return opened

        opened = self.at_gateway("restore", restore)
        print(f"restored snapshot {short(opened.id)} by {opened.author}: {len(opened.manifest.names())} name(s)")

    def restore(self, api: Snapshots, opened: Opened) -> None:
        """Make the namespace the snapshot's; it changes in one step, only once everything was fetched and loaded."""
        diffs = differences(opened.record["environment"])
        if diffs:
            print(describe_differences(diffs), file=sys.stderr)
        api.fetch(str(d) for d in opened.manifest.blob_digests())
        try:
            restored = self.hopper.capturer.restore(opened.manifest, globals=self.shell.user_ns)
        except Exception as e:
            raise KernelhopError(
                f"snapshot {short(opened.id)} could not be restored here ({type(e).__name__}: {e}); "
                "the namespace is unchanged"
            ) from e
        current = user_namespace(self.shell)
        # A name the snapshot could not carry stays as it is here, if it is here; else it gets a placeholder.
        for name in opened.manifest.unpicklable:
            if name in current:
                restored.pop(name, None)
        gone = [n for n in current if n not in restored and n not in opened.manifest.unpicklable]
        with _sigint_deferred():
            self.shell.user_ns.update(restored)
            for name in gone:
                del self.shell.user_ns[name]
        self._moved_to(opened.id, str(opened.record["manifest"]))

    @magic_arguments("snapshot fork")
    @argument("ref", metavar="REF", help="a ref name, a snapshot id (or 6+ of its first digits), or a link")
    @argument("--trust", action="store_true", help="trust the snapshot's signer (after seeing who it is)")
    @argument("--name", help="a ref name for the fork")
    @argument(
        "--here",
        action="store_true",
        help="restore the fork into this kernel instead of starting one (for a frontend that made a new kernel)",
    )
    def _cmd_fork(self, args: argparse.Namespace) -> None:
        opened = self.at_gateway("fork", lambda api: api.open(args.ref, trust=args.trust))
        t0 = time.monotonic()
        fork_id = self.at_gateway("fork", lambda api: api.fork(opened, name=args.name), writes=True)
        t1 = time.monotonic()
        if args.here:
            # JupyterLab's snapshot panel opened a new notebook for the fork: its kernel is this one.
            self.at_gateway("fork", lambda api: self.restore(api, api.open(fork_id)))
            print(f"forked snapshot {short(opened.id)} into {short(fork_id)} and restored it here")
            return
        connection_file = self.start_kernel(fork_id)
        print(
            f"forked snapshot {short(opened.id)} into {short(fork_id)} ({(t1 - t0) * 1000:.0f} ms) and a new kernel "
            f"holding it ({time.monotonic() - t1:.1f} s)\nconnection file: {connection_file}\n"
            f"attach with: jupyter console --existing {connection_file}"
        )

    def start_kernel(self, snapshot_id: str) -> Path:
        """Start an ipykernel of its own session (it outlives this call and this kernel) and restore into it."""
        from jupyter_client.blocking.client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file
        from jupyter_client.launcher import launch_kernel

        folder = kernelhop_home() / "forks"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection_file = folder / f"kernel-{short(snapshot_id)}-{os.getpid()}-{int(time.time())}.json"
        write_connection_file(str(connection_file))
        env = {k: v for k, v in os.environ.items() if k != "JPY_PARENT_PID"}
        process = launch_kernel(
            [sys.executable, "-m", "ipykernel_launcher", "-f", str(connection_file)], env=env, independent=True
        )
        self.forks.append(process)
        client = BlockingKernelClient(connection_file=str(connection_file))
        client.load_connection_file()
        client.start_channels()
        errors: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "error":
                errors.append(msg["content"]["evalue"])

        try:
            client.wait_for_ready(timeout=FORK_TIMEOUT_S)
            # The fork is this user's own snapshot, signed just now: the new kernel trusts it as its own.
            code = f"%load_ext kernelhop.magics.snapshot\n%snapshot restore {snapshot_id}"
            reply = client.execute_interactive(code, timeout=FORK_TIMEOUT_S, output_hook=hook, allow_stdin=False)
            if reply["content"]["status"] != "ok":
                raise KernelhopError(f"the forked kernel could not restore {short(snapshot_id)}: {' '.join(errors)}")
        except BaseException:
            # A kernel that did not get the state is no fork: do not leave it running.
            process.kill()
            self.forks.remove(process)
            connection_file.unlink(missing_ok=True)
            raise
        finally:
            client.stop_channels()
        return connection_file

    @magic_arguments("snapshot diff")
    @argument("a", metavar="A")
    @argument("b", metavar="B")
    def _cmd_diff(self, args: argparse.Namespace) -> None:
        self.at_gateway("diff", lambda api: snapshot_commands.diff(api, args))

    @magic_arguments("snapshot log")
    @argument("ref", metavar="REF", nargs="?", help="the snapshot (default: this kernel's last)")
    @argument("-n", type=int, default=20, help="at most this many entries")
    def _cmd_log(self, args: argparse.Namespace) -> None:
        args.ref = args.ref or self.head
        if args.ref is None:
            raise UsageError("%snapshot log: this kernel has no snapshot yet; give REF or save one first")
        self.at_gateway("log", lambda api: snapshot_commands.log(api, args))

    @magic_arguments("snapshot share")
    @argument("ref", metavar="REF")
    @argument("--with", dest="with_user", metavar="USER", help="the user to share with")
    @argument("--link", action="store_true", help="a link anyone on this gateway can open")
    @argument("--expires", type=float, metavar="SECONDS", help="the share ends after this long")
    def _cmd_share(self, args: argparse.Namespace) -> None:
        if (args.with_user is None) == (not args.link):
            raise UsageError("%snapshot share: give one of --with USER or --link")
        reply = self.at_gateway(
            "share",
            lambda api: api.share(args.ref, with_user=args.with_user, link=args.link, expires_s=args.expires),
            writes=True,
        )
        target = f"link {reply['link']}" if reply.get("link") else f"user {reply['with']}"
        until = (
            f", until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(reply['expires_at'] / 1000))}"
            if reply.get("expires_at")
            else ""
        )
        print(
            f"shared {short(reply['snapshot'])} read-only with {target}{until} (share {reply['share']}; "
            f"end it with %snapshot revoke {reply['share']})"
        )

    @magic_arguments("snapshot revoke")
    @argument("share", metavar="SHARE", help="the share id `%%snapshot share` printed")
    def _cmd_revoke(self, args: argparse.Namespace) -> None:
        self.at_gateway("revoke", lambda api: snapshot_commands.revoke(api, args), writes=True)

    @magic_arguments("snapshot auto")
    @argument("state", choices=["on", "off"])
    def _cmd_auto(self, args: argparse.Namespace) -> None:
        on = args.state == "on"
        if on and not self.auto:
            self.shell.events.register("post_run_cell", self._after_cell)
        elif not on and self.auto:
            self.shell.events.unregister("post_run_cell", self._after_cell)
        self.auto = on
        print(f"kernelhop: a snapshot after every cell is {'on' if on else 'off'}")

    def _after_cell(self, result: Any) -> None:
        cells = self._inputs()[self.mark :]
        if not cells or cells[-1].lstrip().startswith("%snapshot"):
            return
        try:
            # A cell that changed nothing a snapshot holds makes no snapshot.
            self.save(
                name=None, message=f"auto: after cell {len(self._inputs()) - 1}", cells=cells, skip_unchanged=True
            )
        except KernelhopError as e:
            print(f"kernelhop: auto snapshot failed: {e}", file=sys.stderr)

    def close(self) -> None:
        if self.auto:
            self.shell.events.unregister("post_run_cell", self._after_cell)
            self.auto = False


def load_ipython_extension(ip: Any) -> None:
    """Registers %snapshot on the kernel's Hopper (the one %%gpu uses, when kernelhop is loaded)."""
    gpu = ip.magics_manager.registry.get("GpuMagics")
    hopper = gpu.hopper if gpu is not None else Hopper(ip, presenters_for(ip))
    ip.register_magics(SnapshotMagics(ip, hopper))


def unload_ipython_extension(ip: Any) -> None:
    owner = ip.magics_manager.registry.pop(SnapshotMagics.__name__, None)
    if isinstance(owner, SnapshotMagics):
        owner.close()
        ip.magics_manager.magics["line"].pop("snapshot", None)
