"""Rebuild on the runtime what cannot be pickled, by replaying the statements that made it (as ElasticNotebook does),
but only where the rebuilt object is the kernel's, cheaply and without touching anything outside the process.

The recipe of a variable the capture could not pickle. Its *binding* is the most recent top-level statement, among
the cells this kernel ran, that binds the name: an assignment of any kind, `with ... as`, a `for` target, an import,
`def`/`class`, a walrus outside a function, a `match` capture, `except ... as`. Cells are read as IPython transformed
them (`history_manager.input_hist_parsed`), so magics are already calls; a compound statement is taken whole. Its
*uses* are the later statements that read the object (`m.update(b'a')`, `next(gen)`), through the name, through a
name a use bound from it while that name may still hold it (`it = iter(gen)`), through a notebook function they call
that names it, or through a magic's text that names it. The recipe is the binding and every use, in the order they
ran (a dependency graph over the recorded statements), with the recipes of the unpicklable names they read
(`needs`) merged in, each statement once. So the object the runtime gets is the kernel's, state included.

A recipe is made only when all of these hold, else the runtime gets a placeholder and the warning says which rule:

- The name is one the cell reaches (kernelhop_snapshot.reach), or forced with `%%gpu CLASS --rebuild NAME`: a hop
  re-runs nothing for a name the cell does not use.
- The object is alive: a closed file or socket, a finished generator or coroutine, a thread that has run are dead;
  a recipe would make a live one, which is not the kernel's object. (A lock is not dead: an unheld one, rebuilt with
  its uses replayed, is the kernel's.)
- Cheap: the cells its statements came from ran, together, under a bound measured when they ran (CellLog times each
  cell; `KERNELHOP_RECIPE_MAX_S`, default 1 s, kernelhop/config.py). Storing the object is not an option (it does
  not pickle), so the choice ElasticNotebook makes by cost, recompute or store, is here recompute or leave it
  local; a cell that ran before kernelhop was loaded has no measured cost and is never replayed.
- Safe: no statement writes or removes files, runs another program or calls out over the network in a way this
  analysis sees (`open(p, 'w')`, `Path.write_text`, `os.remove`, `shutil`, `df.to_csv`, `np.save`, `pickle.dump`,
  `subprocess`, `!cmd`, `%%bash`, `socket`, `requests`, ...).
- Exact: no statement reads a variable rebound since (it would read the value it has now), changes a variable sent
  as it is (`d[k] = ...`, `obj.a = ...`), reaches the namespace (`globals()`, `eval`, `exec`) where what it did
  cannot be followed, or raised part way through while using the object.

`--rebuild NAME` overrides the reach, the liveness, the cost and the exactness rules for that name and the recipes it
needs, and the warning says what it overrode; never the safety rule: a hop does not write files or run programs on
the runtime on the user's behalf (do that in the cell).

`%%gpu` cells: their body ran on the runtime and is never parsed here; what such a cell binds comes home only when
it pickles, so it never leaves a local unpicklable value to rebuild, and it used no local object. Other magics are
opaque but for the names their text mentions (`%time fh = open(p)` is not seen to bind `fh`). Cells that raised:
the statements from the one that raised on never ran and are dropped (CellLog records where each such cell
stopped).

What the analysis cannot see: a mutation made through a method of a variable sent as it is (`lst.append(x)` in a
replayed statement), a side effect hidden in a library or a notebook function, a binding made by exec, a magic or a
module. The worker checks that the rebuilt object has the kernel's type, and a rebuilt object never comes home
unless the cell rebinds its name (runtime/python/kernelhop_worker/worker.py), so the kernel's own object is never
replaced by it.
"""

from __future__ import annotations

import ast
import inspect
import io
import socket
import symtable
import threading
import time
import types
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from kernelhop_snapshot import cell_reach
from kernelhop_snapshot.reach import DYNAMIC_NAMES, identifiers

# The key of the manifest's `meta` that carries the recipes (docs/FORMAT.md).
META_KEY = "recompute"

# Calls that open a file: the mode is their second argument (or `mode=`); a Path's `.open` takes it first.
_OPENERS = frozenset(
    {"open", "io.open", "builtins.open", "gzip.open", "bz2.open", "lzma.open", "codecs.open", "tarfile.open"}
)
_WRITE_MODE = frozenset("wax+")
# Module-level functions that change files, by module (any `shutil` function copies, moves or removes files).
_FILE_CHANGERS = frozenset(
    {
        "os.remove", "os.unlink", "os.rename", "os.renames", "os.replace", "os.rmdir", "os.removedirs", "os.mkdir",
        "os.makedirs", "os.truncate", "os.chmod", "os.chown", "os.symlink", "os.link", "os.open", "os.write",
        "os.mkfifo", "tempfile.mkstemp", "tempfile.mkdtemp",
    }
)  # fmt: skip
# Methods that write files whatever they are called on (few other objects have methods of these names).
_WRITING_METHODS = frozenset(
    {
        "write_text", "write_bytes", "unlink", "rmdir", "mkdir", "touch", "symlink_to", "hardlink_to", "savefig",
        "save", "savez", "savez_compressed", "savetxt", "tofile", "to_csv", "to_parquet", "to_pickle", "to_excel",
        "to_hdf", "to_feather", "to_sql", "to_stata", "to_orc", "dump", "dump_module", "dump_session",
    }
)  # fmt: skip
_PROGRAM_RUNNERS = ("subprocess.", "os.system", "os.popen", "os.exec", "os.spawn", "os.posix_spawn", "os.fork")
_PROGRAM_RUNNERS += ("os.kill", "os.killpg", "pty.", "multiprocessing.", "asyncio.create_subprocess")
_NETWORK_MODULES = frozenset(
    {
        "socket", "ssl", "requests", "urllib", "urllib3", "http", "httpx", "aiohttp", "ftplib", "smtplib",
        "poplib", "imaplib", "telnetlib", "xmlrpc", "websocket", "websockets", "grpc", "paramiko", "boto3",
        "botocore", "pymongo", "psycopg", "psycopg2", "redis", "pika", "zmq",
    }
)  # fmt: skip
# IPython's calls for `!cmd`, `!!cmd` and `x = !cmd`, and the magics that run other programs or write files.
_SHELL_CALLS = frozenset({"get_ipython().system", "get_ipython().getoutput"})
_PROGRAM_MAGICS = frozenset(
    {"bash", "sh", "script", "system", "sx", "writefile", "file", "perl", "ruby", "python", "python2", "python3"}
)
_PROGRAM_MAGICS |= {"pypy", "run", "pip", "conda", "mamba", "cd", "mkdir", "rm", "rmdir", "mv", "cp", "store"}


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a cell, as the analysis sees it."""

    code: str
    start_line: int
    end_line: int
    binds: frozenset[str]
    deletes: frozenset[str]
    # Names read while the statement runs (not those read later by a function or a generator's body it makes).
    reads: frozenset[str]
    # Identifiers in its string constants: names a magic's text or an eval string may use.
    mentions: frozenset[str]
    # Names whose item or attribute it assigns or deletes (`d[k] = v`, `o.a += 1`): changed in place.
    changes: frozenset[str]
    # Its calls, as dotted names (`os.remove`, `?.write_text` on an expression), each with the file modes its first
    # two arguments would give (_call).
    calls: tuple[tuple[str, tuple[str | None, str | None]], ...]
    # The magics it runs (`time` for `%time ...`).
    magics: tuple[str, ...]
    # Names an import binds, with the module path they stand for (`sp` -> `subprocess`, `remove` -> `os.remove`).
    imports: tuple[tuple[str, str], ...]
    # It reaches the namespace dict (globals(), eval, exec, ...): what it reads or changes cannot be followed.
    dynamic: bool
    # A `%%gpu` cell: its body ran on the runtime, never here.
    remote: bool


@dataclass(frozen=True)
class Recipe:
    # Indexes of the recorded statements it replays, in the order they ran (its needs' statements included).
    steps: tuple[int, ...]
    needs: tuple[str, ...]  # unpicklable names rebuilt with it, their statements merged in
    # What `--rebuild` overrode for it (empty when nothing was): said in the warning.
    overrode: tuple[str, ...] = ()


@dataclass
class Plan:
    """What the capture's unpicklable names in reach get: a recipe, or the reason there is none."""

    code: dict[int, str] = field(default_factory=dict)  # statement index -> its code, for the recipes' steps
    recipes: dict[str, Recipe] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def steps(self, name: str) -> list[str]:
        return [self.code[k] for k in self.recipes[name].steps]

    def meta(self) -> dict[str, Any]:
        """The manifest `meta` entry: {"recompute": {"steps": [code, ...], "names": {name: [step, ...]}}}, where
        the worker runs the steps in order, each once, and a name's list says which of them it needs; nothing when
        there is no recipe."""
        if not self.recipes:
            return {}
        used = sorted({k for r in self.recipes.values() for k in r.steps})
        position = {k: i for i, k in enumerate(used)}
        names = {n: [position[k] for k in r.steps] for n, r in sorted(self.recipes.items())}
        return {META_KEY: {"steps": [self.code[k] for k in used], "names": names}}

    def warnings(self, unpicklable: Mapping[str, str]) -> list[str]:
        """One line per planned name (with its pickling error), saying what the runtime gets and why."""
        lines = []
        for name, reason in sorted(unpicklable.items()):
            recipe = self.recipes.get(name)
            if recipe is None:
                if name in self.missing:
                    lines.append(
                        f"kernelhop: variable {name!r} stays local: {reason}; it is not rebuilt on the runtime "
                        f"({self.missing[name]}), so using it there raises an error"
                    )
                continue
            note = f"it cannot be pickled: {reason}"
            if recipe.overrode:
                note += "; --rebuild overrode: " + "; ".join(recipe.overrode)
            steps = self.steps(name)
            head = f"kernelhop: variable {name!r} is rebuilt on the runtime by re-running"
            if len(steps) == 1 and "\n" not in steps[0]:
                lines.append(f"{head}: {steps[0]} ({note})")
            else:
                lines.append(f"{head} ({note}):\n    " + "\n".join(steps).replace("\n", "\n    "))
        return lines


def find_recipes(
    cells: Sequence[str],
    unpicklable: Iterable[str],
    stopped_at: Mapping[int, int] | None = None,
    *,
    durations: Mapping[int, float],
    limit_s: float,
    targets: Collection[str] | None = None,
    forced: Collection[str] = (),
    namespace: Mapping[str, Any] | None = None,
    globals_dict: Mapping[str, Any] | None = None,
) -> Plan:
    """The recipes for the ``unpicklable`` names in ``targets`` (None: all of them) and ``forced``, from ``cells``
    (the transformed sources of ``In``, oldest first).

    ``stopped_at`` maps the index in ``cells`` of a cell that raised to the line it stopped at (0: it never ran);
    ``durations`` the index of each cell timed to the seconds it ran; ``limit_s`` is the cost bound. ``namespace``
    (the kernel's, with ``globals_dict`` its functions' globals) gives the objects: which are dead, and which
    notebook functions a statement calls."""
    return _Planner(cells, stopped_at or {}, durations, limit_s, namespace or {}, globals_dict).plan(
        set(unpicklable), targets, set(forced)
    )


@dataclass
class _Chain:
    """One name's own statements (its binding and its uses) and the unpicklable names they read."""

    steps: frozenset[int]
    needs: frozenset[str]


class _Planner:
    def __init__(
        self,
        cells: Sequence[str],
        stopped_at: Mapping[int, int],
        durations: Mapping[int, float],
        limit_s: float,
        namespace: Mapping[str, Any],
        globals_dict: Mapping[str, Any] | None,
    ) -> None:
        self.stmts: list[Statement] = []
        self.cell_of: list[int] = []
        self.raised: dict[int, Statement] = {}  # cell index -> the statement it raised in, where known
        for i, source in enumerate(cells):
            stop = stopped_at.get(i)
            for s in _statements(source):
                if stop is None or s.end_line < stop:
                    self.stmts.append(s)
                    self.cell_of.append(i)
                elif s.start_line <= stop and i not in self.raised:
                    self.raised[i] = s
        self.durations = durations
        self.limit_s = limit_s
        self.namespace = namespace
        self.globals_dict = namespace if globals_dict is None else globals_dict
        self.last: dict[str, int] = {}
        for k, s in enumerate(self.stmts):
            for name in s.binds | s.deletes:
                self.last[name] = k
        self.aliases = {name: module for s in self.stmts for name, module in s.imports}
        self.unpicklable: set[str] = set()
        self.chains: dict[str, _Chain | str] = {}
        self.function_reach: dict[str, frozenset[str] | None] = {}

    def plan(self, unpicklable: set[str], targets: Collection[str] | None, forced: set[str]) -> Plan:
        self.unpicklable = unpicklable
        plan = Plan()
        wanted = unpicklable if targets is None else unpicklable & (set(targets) | forced)
        for name in sorted(wanted):
            made = self.recipe(name, name in forced)
            if isinstance(made, Recipe):
                plan.recipes[name] = made
                plan.code.update((k, self.stmts[k].code) for k in made.steps)
            else:
                plan.missing[name] = made
        return plan

    def recipe(self, name: str, forced: bool) -> Recipe | str:
        """``name``'s recipe, or why it has none: its chain and those of its needs, under the rules."""
        overrode: list[str] = []
        steps: set[int] = set()
        closure, todo = [], [name]
        while todo:
            n = todo.pop()
            if n in closure:
                continue
            closure.append(n)
            dead = self.dead(n)
            if dead is not None:
                if not forced:
                    return dead if n == name else f"it needs {n!r}, and {dead}"
                overrode.append(dead if n == name else f"{dead} ({n!r})")
            chain = self.chain(n)
            if isinstance(chain, str) and forced and chain.startswith(_INEXACT):
                overrode.append(f"{chain} ({n!r})" if n != name else chain)
                chain = self.chain(n, exact=False)
            if isinstance(chain, str):
                return chain if n == name else f"it needs {n!r}, which cannot be rebuilt: {chain}"
            steps |= chain.steps
            todo.extend(sorted(chain.needs))
        for k in sorted(steps):
            effect = self.effect(self.stmts[k])
            if effect is not None:
                return f"re-running `{_first_line(self.stmts[k].code)}` {effect}: a hop never does that on its own"
        why = self.too_costly({self.cell_of[k] for k in steps})
        if why is not None:
            if not forced:
                return why
            overrode.append(why)
        return Recipe(tuple(sorted(steps)), tuple(n for n in closure if n != name), tuple(overrode))

    def too_costly(self, cells: set[int]) -> str | None:
        if any(i not in self.durations for i in cells):
            return "its cell ran before kernelhop was loaded, so what re-running it costs is unknown"
        cost = sum(self.durations[i] for i in cells)
        if cost > self.limit_s:
            return f"its cells took {cost:.2f} s, over the {self.limit_s:g} s bound on what a hop re-runs"
        return None

    def chain(self, name: str, exact: bool = True) -> _Chain | str:
        """The statements that made ``name``'s object what it is now, or why they cannot be replayed exactly."""
        if exact and name in self.chains:
            return self.chains[name]
        made = self._chain(name, exact)
        if exact:
            self.chains[name] = made
        return made

    def _chain(self, name: str, exact: bool) -> _Chain | str:
        k = self.last.get(name)
        if k is None:
            return "no cell run in this kernel assigns it: made by exec, a module or a function?"
        if name not in self.stmts[k].binds:
            return "the last cell statement naming it deletes it"
        steps, needs = [k], set()
        holders = {name}
        for j in range(k + 1, len(self.stmts)):
            s = self.stmts[j]
            if s.remote:
                continue
            used = self.uses(s, holders)
            if used is None:
                if exact:
                    return f"{_INEXACT} `{_first_line(s.code)}` reaches the namespace, so what it did to it is unknown"
                continue
            if used:
                steps.append(j)
                # A name bound from the object may hold it, unless its value now pickled and is that binding's.
                holders |= {b for b in s.binds if b in self.unpicklable or self.last[b] > j}
            else:
                holders -= s.binds
            holders -= s.deletes
        for i, s in self.raised.items():
            if not s.remote and i >= self.cell_of[k] and self.uses(s, {name}) != set():
                if exact:
                    return f"{_INEXACT} `{_first_line(s.code)}` used it and raised part way through"
        bound_here: set[str] = set()
        for j in steps:
            s = self.stmts[j]
            for read in sorted(s.reads - bound_here):
                rebound = self.last.get(read, -1) > j
                if read in self.unpicklable:
                    if rebound:
                        return f"its statement read {read!r}, which cannot be pickled and was rebound since"
                    needs.add(read)
                elif rebound and exact and read not in self.unpicklable:
                    return (
                        f"{_INEXACT} it reads {read!r}, which was rebound since, so re-running would not make the "
                        "same object"
                    )
            changed = sorted(s.changes - self.unpicklable - bound_here)
            if changed and exact:
                shown = _first_line(s.code)
                return f"{_INEXACT} re-running `{shown}` would change {changed[0]!r}, which is sent as it is"
            bound_here |= s.binds
        return _Chain(frozenset(steps), frozenset(needs))

    def uses(self, s: Statement, holders: set[str]) -> set[str] | None:
        """The holders ``s`` reads, directly, through a magic's text or a notebook function; None when it reaches
        the namespace itself."""
        if s.dynamic:
            return None
        used = (s.reads | s.mentions) & holders
        for read in s.reads - used:
            reached = self.reach_of(read)
            if reached is None:
                return None
            used |= reached & holders
        return used

    def reach_of(self, name: str) -> frozenset[str] | None:
        """The names a notebook function or class in the namespace reaches (None: any); nothing for other values."""
        if name not in self.function_reach:
            value = self.namespace.get(name)
            notebook = isinstance(value, types.FunctionType | types.MethodType) or (
                isinstance(value, type) and value.__module__ == self.globals_dict.get("__name__", "__main__")
            )
            self.function_reach[name] = (
                cell_reach(name, self.namespace, globals_dict=self.globals_dict) if notebook else frozenset()
            )
        return self.function_reach[name]

    def dead(self, name: str) -> str | None:
        value = self.namespace.get(name)
        if value is None:
            return None
        what = _dead(value)
        return None if what is None else f"it is {what}: a recipe would make a live one, not the kernel's"

    def effect(self, s: Statement) -> str | None:
        """What ``s`` does outside the process that the analysis sees, or None."""
        for dotted, (first, second) in s.calls:
            root, _, rest = dotted.partition(".")
            module = self.aliases.get(root)
            full = (f"{module}.{rest}" if rest else module) if module else dotted
            method = full.rsplit(".", 1)[-1]
            # A module's open (`gzip.open`, `open` itself) takes the mode second; an object's (a Path's) first.
            mode = second if full in _OPENERS else first if method == "open" and module is None and rest else None
            if mode is not None and (mode == "?" or not _WRITE_MODE.isdisjoint(mode)):
                shown = "a mode the analysis cannot read" if mode == "?" else repr(mode)
                return f"opens a file for writing ({shown})"
            if full in _FILE_CHANGERS or full.startswith("shutil."):
                return f"changes files ({full})"
            if "." in full and method in _WRITING_METHODS:
                return f"writes files (.{method})"
            if full in _SHELL_CALLS:
                return "runs a shell command (!)"
            if full.startswith(_PROGRAM_RUNNERS):
                return f"runs another program ({full})"
            if full.split(".", 1)[0] in _NETWORK_MODULES:
                return f"calls out over the network ({full})"
        for magic in s.magics:
            if magic in _PROGRAM_MAGICS:
                return f"runs the magic %{magic}, which writes files or runs programs"
        return None


# How the reasons of the exactness rule start: --rebuild may override them.
_INEXACT = "re-running would not give the kernel's object:"


def _dead(value: Any) -> str | None:
    """What makes ``value`` dead (its state is final: a rebuilt one would be alive), or None."""
    try:
        if isinstance(value, io.IOBase) and value.closed:
            return "a closed file"
        if isinstance(value, socket.socket) and value.fileno() == -1:
            return "a closed socket"
        if isinstance(value, types.GeneratorType) and inspect.getgeneratorstate(value) == inspect.GEN_CLOSED:
            return "a finished generator"
        if isinstance(value, types.CoroutineType) and inspect.getcoroutinestate(value) == inspect.CORO_CLOSED:
            return "a finished coroutine"
        if isinstance(value, types.AsyncGeneratorType) and value.ag_frame is None:
            return "a finished async generator"
        if isinstance(value, threading.Thread) and value.ident is not None and not value.is_alive():
            return "a thread that has run"
    except Exception:
        return None  # a value whose state cannot be read is not known to be dead
    return None


class CellLog:
    """The cells this kernel ran: where each one that raised stopped (statements from there on never ran), and how
    long each ran."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        # index in In -> (its source, the line it stopped at); the source tells an entry from a history reset since.
        self.stopped_at: dict[int, tuple[str, int]] = {}
        # index in In -> (its source, the seconds it ran)
        self.durations: dict[int, tuple[str, float]] = {}
        self._started: float | None = None
        shell.events.register("pre_run_cell", self._before_cell)
        shell.events.register("post_run_cell", self._after_cell)

    def close(self) -> None:
        # Closing twice is fine: unloading the extension closes its magics once per kind (line and cell).
        for event, callback in (("pre_run_cell", self._before_cell), ("post_run_cell", self._after_cell)):
            if callback in self.shell.events.callbacks[event]:
                self.shell.events.unregister(event, callback)

    def sources(self) -> list[str]:
        history = getattr(self.shell, "history_manager", None)
        return list(history.input_hist_parsed) if history is not None else []

    def plan(
        self,
        unpicklable: Iterable[str],
        *,
        limit_s: float,
        targets: Collection[str] | None = None,
        forced: Collection[str] = (),
        namespace: Mapping[str, Any] | None = None,
    ) -> Plan:
        cells = self.sources()

        def current(entries: Mapping[int, tuple[str, Any]]) -> dict[int, Any]:
            return {i: v for i, (src, v) in entries.items() if i < len(cells) and cells[i] == src}

        return find_recipes(
            cells,
            unpicklable,
            current(self.stopped_at),
            durations=current(self.durations),
            limit_s=limit_s,
            targets=targets,
            forced=forced,
            namespace=namespace,
            globals_dict=self.shell.user_global_ns,
        )

    def _before_cell(self, info: Any) -> None:
        self._started = time.perf_counter()

    def _after_cell(self, result: Any) -> None:
        started, self._started = self._started, None
        if not result.info.store_history:
            return  # not in In, so never read as a recipe
        # The cell was appended to the history before it ran; its index there is what find_recipes counts by.
        cells = self.sources()
        if started is not None:
            self.durations[len(cells) - 1] = (cells[-1], time.perf_counter() - started)
        if result.error_before_exec is not None:
            self.stopped_at[len(cells) - 1] = (cells[-1], 0)
        elif result.error_in_exec is not None:
            tb = result.error_in_exec.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_name != "<module>":
                tb = tb.tb_next
            # The first module-level frame is the cell's own (IPython compiles each top-level statement as a module).
            self.stopped_at[len(cells) - 1] = (cells[-1], tb.tb_lineno if tb is not None else 0)


def _first_line(code: str) -> str:
    line = code.split("\n", 1)[0]
    return line if "\n" not in code else line + " ..."


@lru_cache(maxsize=4096)
def _statements(source: str) -> tuple[Statement, ...]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ()  # such a cell never ran
    return tuple(_statement(node) for node in tree.body)


def _statement(node: ast.stmt) -> Statement:
    code = ast.unparse(node)
    table = symtable.symtable(code, "<cell>", "exec")
    binds = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    reads = _eager_reads(table) - binds
    deletes: set[str] = set()
    changes: set[str] = set()
    calls: list[tuple[tuple[int, int], tuple[str, tuple[str | None, str | None]]]] = []
    mentions: set[str] = set()
    dynamic = False
    for sub in _module_scope_nodes(node):
        if isinstance(sub, ast.Delete):
            deletes.update(t.id for t in sub.targets if isinstance(t, ast.Name))
            changes.update(_changed_root(t) for t in sub.targets if not isinstance(t, ast.Name))
        elif isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
            binds.add(sub.target.id)  # a walrus in a comprehension binds in the module
        elif isinstance(sub, ast.AnnAssign) and sub.value is None and isinstance(sub.target, ast.Name):
            binds.discard(sub.target.id)  # `x: int` alone binds nothing
        elif isinstance(sub, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
            changes.update(_changed_root(t) for t in _flat_targets(targets) if not isinstance(t, ast.Name))
        elif isinstance(sub, ast.Call):
            calls.append(((sub.lineno, sub.col_offset), _call(sub)))
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            mentions.update(identifiers(sub.value))
        elif isinstance(sub, ast.Name) and sub.id in DYNAMIC_NAMES - {"get_ipython"}:
            dynamic = True
    changes.discard("")
    # symtable counts `del x` as an assignment; a name both deleted and bound stays bound (the later wins at run
    # time, and either way re-running the statement reproduces it).
    only_deleted = {n for n in deletes if not _stores(node, n)}
    binds -= only_deleted
    in_order = tuple(call for _, call in sorted(calls))  # so a warning names the first in the code
    magics = _magics_of(node)
    remote = any(d == "get_ipython().run_cell_magic" for d, _ in in_order) and magics == ["gpu"]
    return Statement(
        code=code,
        start_line=node.lineno,
        end_line=node.end_lineno or node.lineno,
        binds=frozenset(binds),
        deletes=frozenset(only_deleted),
        reads=frozenset(reads),
        mentions=frozenset(mentions),
        changes=frozenset(changes),
        calls=in_order,
        imports=tuple(_imports(node)),
        magics=tuple(magics),
        dynamic=dynamic,
        remote=remote,
    )


def _magics_of(node: ast.AST) -> list[str]:
    """The names of the magics a statement runs (IPython's `run_line_magic`/`run_cell_magic` calls)."""
    out = []
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Call)
            and _dotted(sub.func) in ("get_ipython().run_line_magic", "get_ipython().run_cell_magic")
            and sub.args
            and isinstance(sub.args[0], ast.Constant)
            and isinstance(sub.args[0].value, str)
        ):
            out.append(sub.args[0].value.lstrip("%"))
    return out


def _dotted(func: ast.expr) -> str:
    """`os.path.join` for a call of `os.path.join`, `get_ipython().system`, `?.write_text` on another expression."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_dotted(func.value)}.{func.attr}"
    if isinstance(func, ast.Call):
        return f"{_dotted(func.func)}()"
    return "?"


def _call(call: ast.Call) -> tuple[str, tuple[str | None, str | None]]:
    """A call's dotted name and the modes it may open a file with: its first and second argument as a Path's
    `.open` and `open()` take them (`mode=` for both): the text of a string literal, "?" for another expression,
    None when absent."""
    mode = next((k.value for k in call.keywords if k.arg == "mode"), None)
    given = [mode, mode] if mode is not None else [*call.args[:2], None, None][:2]
    return _dotted(call.func), tuple(_literal(g) for g in given)  # type: ignore[return-value]


def _literal(node: ast.expr | None) -> str | None:
    if node is None:
        return None
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "?"


def _imports(node: ast.stmt) -> Iterable[tuple[str, str]]:
    for sub in _module_scope_nodes(node):
        if isinstance(sub, ast.Import):
            for a in sub.names:
                yield (a.asname, a.name) if a.asname else (a.name.split(".")[0], a.name.split(".")[0])
        elif isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
            for a in sub.names:
                yield a.asname or a.name, f"{sub.module}.{a.name}"


def _flat_targets(targets: list[ast.expr]) -> Iterable[ast.expr]:
    for t in targets:
        if isinstance(t, ast.Tuple | ast.List):
            yield from _flat_targets(list(t.elts))
        elif isinstance(t, ast.Starred):
            yield from _flat_targets([t.value])
        else:
            yield t


def _changed_root(target: ast.expr) -> str:
    """The variable whose item or attribute ``target`` stores into (`d` for `d['k']`, `o` for `o.a.b`)."""
    while isinstance(target, ast.Attribute | ast.Subscript):
        target = target.value
    return target.id if isinstance(target, ast.Name) else ""


# Scopes whose code runs while the statement runs; a function's, a lambda's and a generator's run later.
_EAGER_SCOPES = frozenset({"listcomp", "setcomp", "dictcomp"})


def _eager_reads(table: symtable.SymbolTable) -> set[str]:
    """Module-level names read while the statement runs: at its top level, in class bodies and list, set and dict
    comprehensions (not in a function's or a generator's body, which read them when called or iterated)."""
    reads = set()
    for sym in table.get_symbols():
        at_top = table.get_type() == "module"
        if sym.is_referenced() and (at_top or sym.is_global()):
            reads.add(sym.get_name())
    for child in table.get_children():
        if child.get_type() == "class" or child.get_name() in _EAGER_SCOPES:
            reads |= _eager_reads(child)
    return reads


def _module_scope_nodes(node: ast.AST) -> Iterable[ast.AST]:
    """``node`` and what it holds, without the bodies of functions, lambdas and classes (their own scopes)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(n))


def _stores(node: ast.AST, name: str) -> bool:
    return any(
        isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store) for n in _module_scope_nodes(node)
    )
