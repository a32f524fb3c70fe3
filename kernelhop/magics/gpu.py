"""`%%gpu CLASS` runs one cell on a pooled GPU runtime; `%gpu` lists the GPU classes the gateway serves now, and
`%gpu CLASS` runs every following cell there until `%gpu off`."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..client.background import BackgroundHop, settle_before_cell
from ..client.hop import Hopper, RemoteResult
from ..client.usage import format_report, parse_since
from .hop_presenter import presenters_for
from .sticky import StickyGpu


@magics_class
class GpuMagics(Magics):
    def __init__(self, shell: Any):
        super().__init__(shell)
        # One per kernel: its session id and capturer outlive single cells, so later hops move only what changed.
        self.hopper = Hopper(shell, presenters_for(shell))
        self.sticky = StickyGpu(shell)
        # The safe point where a background hop's result is applied: before a cell runs, never inside one.
        self._settle = lambda *_: settle_before_cell(self.hopper)
        shell.events.register("pre_run_cell", self._settle)

    @magic_arguments("%gpu")  # usage reads `%%gpu ...`: a cell magic
    @argument("gpu_class", metavar="CLASS", help="the GPU class to run on, e.g. h100 (%%gpu without a cell lists them)")
    @argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop the cell once it has run this long on the GPU (default: no limit)",
    )
    @argument("-q", "--quiet", action="store_true", help="leave out the live hop display and the status line")
    @argument(
        "--eager",
        action="store_true",
        help="restore the whole state on the runtime before the cell, not only the variables the cell can reach",
    )
    @argument(
        "--rebuild",
        action="append",
        default=[],
        metavar="NAME",
        help="rebuild this unpicklable variable on the runtime by re-running its statements even where the rules "
        "below refuse (not reached, dead, over the cost bound, not exact); never one that writes files, runs "
        "programs or uses the network. Repeatable",
    )
    @argument(
        "--no-files",
        action="store_true",
        help="do not send the working directory; the cell runs wherever the runtime's worker is, and no file comes home",
    )
    @argument(
        "--no-packages",
        action="store_true",
        help="do not send this kernel's package versions; the runtime installs nothing and names no difference",
    )
    @argument(
        "--background",
        action="store_true",
        help="return at once with a handle once the state is sent; the cell's output streams here meanwhile, and "
        "what it changed is applied before the next cell runs (names changed here since are kept and named); "
        "handle.wait() / %%gpu wait applies it now, handle.cancel() / %%gpu cancel drops it",
    )
    @cell_magic("gpu")
    def gpu_cell(self, line: str, cell: str) -> RemoteResult | BackgroundHop | None:
        """Run this cell on a pooled GPU with the kernel's whole state, then bring home what it changed.

        The user namespace is captured and sent; output streams back live; variables the cell assigned, changed
        or deleted come home when it ends. If anything fails before that (gateway unreachable, unknown class,
        runtime lost, timeout, interrupt), the local namespace stays exactly as it was. A remote exception fails
        the cell with the remote traceback, raised as its own class (where this kernel can import it) and as
        RemoteCellError; what the cell changed before raising still comes home.

        Variables that cannot be pickled (open files, generators, locks, hash objects, ...) stay local. One the
        cell reaches is rebuilt on the runtime by re-running, there, the statements of this kernel's history that
        made it and that used it since, in order, and only when all of these hold (else it is a placeholder there
        that raises an error naming it, and the warning says which rule refused):
          - it is alive: not a closed file or socket, a finished generator, a thread that has run;
          - cheap: the cells of those statements ran here in under KERNELHOP_RECIPE_MAX_S seconds together
            (default 1; a cell run before kernelhop was loaded has no measured cost and is never re-run);
          - safe: none of them writes or removes files, runs a program or uses the network as far as the code
            shows (open(p, 'w'), os.remove, df.to_csv, pickle.dump, subprocess, !cmd, requests, ...);
          - exact: none reads a variable rebound since, changes a variable sent as it is, or reaches the
            namespace (globals(), eval), so the rebuilt object equals this kernel's.
        --rebuild NAME overrides all of these for that name but the safety rule; the warning says what it
        overrode. A rebuilt object never comes home: this kernel keeps its own unless the cell rebinds the name.
        What a cell makes on the runtime that cannot be pickled there stays on the runtime for the next %%gpu
        cells of the session (warned about once; `del NAME` in a %%gpu cell ends it).

        What the runtime made that this kernel cannot unpickle (an object of a module only the runtime has)
        stays there: the name holds a placeholder that raises an error saying so, and later %%gpu cells get the
        real object; what the runtime cannot unpickle (an object of the notebook's own modules) stays here, and
        using it in the cell raises an error saying so.

        The cell runs in a copy of the kernel's working directory, so relative paths and the notebook's own
        modules work there; files it writes or deletes there come home, unless the local file changed meanwhile
        (then the cell's version is saved as NAME.kernelhop-remote and a warning says so). .kernelhopignore
        (gitignore syntax) leaves files out; at most KERNELHOP_FILES_MAX_BYTES (1 GiB) travel; --no-files sends none.

        The packages this kernel imported that the runtime's workers lack, or have at another version, are installed
        there from the runtime's index or wheelhouse (once per set, shared by sessions) before the restore; what
        cannot be (another Python, no wheel) is named before the cell runs. --no-packages turns this off.

        The runtime restores only the variables the cell can reach: those its code names, and those the
        notebook's functions and classes it reaches name in turn; the others stay in the snapshot, untouched,
        until a later cell reaches them. A cell that reaches the namespace itself (globals(), eval, a magic)
        gets the whole state; --eager asks for it always (for code that reads the notebook's globals from a
        library, which the cell's code cannot show).

        Example::

            %%gpu h100 --timeout 600
            import torch
            w = torch.linalg.svd(torch.as_tensor(x, device="cuda")).S

        The gateway is found through KERNELHOP_GATEWAY and KERNELHOP_TOKEN, else ~/.kernelhop/gateway.json.
        """
        args = parse_argstring(self.gpu_cell, line)
        if not cell.strip():
            raise UsageError("%%gpu: the cell is empty; put the code to run on the GPU below the %%gpu line")
        if args.timeout is not None and not args.timeout > 0:
            raise UsageError(f"%%gpu: --timeout must be a positive number of seconds, got {args.timeout:g}")
        for name in args.rebuild:
            if not name.isidentifier():
                raise UsageError(f"%%gpu: --rebuild takes a variable name, got {name!r}")
        hop = self.hopper.hop_background if args.background else self.hopper.hop
        return hop(
            args.gpu_class,
            cell,
            timeout_s=args.timeout,
            quiet=args.quiet,
            eager=args.eager,
            rebuild=tuple(dict.fromkeys(args.rebuild)),
            files=not args.no_files,
            packages=not args.no_packages,
        )

    @line_magic("gpu")
    def gpu_line(self, line: str) -> None:
        """List the GPU classes the kernelhop gateway serves now: runtimes, capacity, busy and queued cells.

        `%gpu env CLASS` shows which of this kernel's packages a runtime of CLASS installs for its cells (and what
        it cannot), by a hop that runs nothing of the notebook (the runtime prepares them then, as for the next cell).
        `%gpu usage [SINCE]` shows your GPU-seconds per notebook, cell, class and runtime (SINCE: 24h, 7d, a date).
        `%gpu wait` applies the background hop (`%%gpu CLASS --background`) now, waiting for it; `%gpu cancel` drops it.
        `%gpu CLASS [--timeout S] [-q] [--eager] [--no-files] [--no-packages]` runs every following cell on CLASS, as if
        each began with `%%gpu CLASS ...`; the session's worker stays warm there, so each cell moves only what
        changed, and the kernel's namespace is up to date after each. `%gpu off` runs cells here again, with the state.
        To run a cell on one of them, start the cell with `%%gpu CLASS`.
        """
        words = line.split()
        if words[:1] == ["env"]:
            if len(words) != 2:
                raise UsageError("%gpu env takes one GPU class: %gpu env CLASS (`%gpu` lists them)")
            # No assignment: nothing of this cell comes home. The runtime has prepared the overlay before it runs.
            code = "print(__import__('kernelhop_worker.overlay', fromlist=['report']).report())"
            self.hopper.hop(words[1], code, quiet=True, files=False)
            return
        if words[:1] == ["usage"]:
            if len(words) > 2:
                raise UsageError("%gpu usage takes at most a span or date: %gpu usage [24h|7d|2026-12-01]")
            try:
                fields = {"since": parse_since(words[1])} if len(words) == 2 else {}
            except ValueError as e:
                raise UsageError(f"%gpu usage: {e}") from None
            print(format_report(self.hopper.gateways.call(lambda client: client.usage(**fields), what="%gpu usage")))
            return
        if words in (["wait"], ["cancel"]):
            handle = self.hopper.background
            if handle is None:
                print("no background hop is running")
                return
            if words == ["cancel"]:
                handle.cancel()
                print(f"cancelled the background hop on {handle.gpu_class} ({handle.cell}); nothing applied")
                return
            handle.wait()
            print(f"applied the background hop on {handle.gpu_class} ({handle.cell}): {', '.join(handle.applied) or 'nothing changed'}")
            return
        if words == ["off"]:
            was = self.sticky.off()
            print(f"cells run here again (they ran on {was})" if was else "cells run here already")
            return
        if words:
            self._stick(words[0], line.strip()[len(words[0]) :])
            return
        print(self.hopper.describe_classes())
        if self.sticky.gpu_class is not None:
            print(f"Every cell runs on {self.sticky.gpu_class} (%gpu off to run here).")

    def _stick(self, gpu_class: str, options: str) -> None:
        if gpu_class.startswith("-"):
            raise UsageError(f"%gpu {gpu_class}: name the class first: %gpu CLASS [options]; `%gpu` lists the classes")
        # The options are checked now, as %%gpu will read them, so a typo fails here and not on every later cell.
        try:
            parse_argstring(self.gpu_cell, f"{gpu_class} {options}")
        except UsageError as e:
            raise UsageError(f"%gpu {gpu_class}{options}: {e}") from None
        classes = self.hopper.gateways.call(lambda client: client.classes(), what=f"%gpu {gpu_class}")
        if gpu_class not in classes:
            known = ", ".join(sorted(classes)) or "none: no runtime is connected"
            raise UsageError(f"%gpu {gpu_class}: the gateway serves no class {gpu_class!r}; available: {known}")
        self.sticky.on(gpu_class, options)
        print(f"every cell runs on {gpu_class} now, with the kernel's state; %gpu off runs them here again")

    def close(self) -> None:
        if self._settle in self.shell.events.callbacks["pre_run_cell"]:  # close() may come once per magic kind
            self.shell.events.unregister("pre_run_cell", self._settle)
        self.sticky.close()
        self.hopper.close()
        self.hopper.cells.close()
