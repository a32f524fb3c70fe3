"""Rebuild on the runtime what cannot be pickled, by re-running the statement that made it (as ElasticNotebook does).

The rule. For each variable the capture could not pickle, its *recipe* is the most recent top-level statement, among
the cells this kernel ran, that binds the name: an assignment of any kind, `with ... as`, a `for` target, an import,
`def`/`class`, a walrus outside a function, a `match` capture, `except ... as`. Cells are read as IPython transformed
them (`history_manager.input_hist_parsed`), so magics are already calls. A compound statement is taken whole:
re-running `for p in paths: fh = open(p)` runs the loop again. When the statement reads, as it runs, names that are
themselves unpicklable, their recipes run first (`needs`); a name captured normally is already on the other side.

No recipe (the runtime gets the placeholder, and the warning says why) when: no recorded statement binds the name
(made by `exec`, by a module, by a function through `global`, or in a cell before history was kept); the last
recorded statement naming it deletes it; or its statement reads an unpicklable name that has no recipe, or one
rebound since (the object it used is gone from the namespace).

`%%gpu` cells: their body is a string argument of `run_cell_magic('gpu', ...)` and is never parsed here. That is
sound: what a remote cell binds comes home only when it pickles, so it never leaves a local unpicklable value to
rebuild. Other magics are opaque the same way (`%time fh = open(p)` is not seen to bind `fh`).

Cells that raised: the statements from the one that raised on never ran, so they are dropped (CellLog records where
each such cell stopped).

Why this is sound enough, and where it stops. Re-running repeats the statement's side effects *on the runtime host*
(`open(p, "w")` truncates `p` there; a loop runs again), which is why the warning shows the code. The object is
fresh: what later cells did to it (items taken from a generator, a file's position, a lock held) is not replayed.
The names it reads have the values they have now; those rebound since are named in the warning, and mutation is not
seen. A binding the history cannot show (exec, `globals()[...]`, a magic) made after the statement leaves the recipe
stale; the worker catches the common case by checking that the rebuilt object has the type the kernel's has.
"""

from __future__ import annotations

import ast
import symtable
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# The key of the manifest's `meta` that carries the recipes (docs/ARCHITECTURE.md, "Snapshot format").
META_KEY = "recompute"


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a cell: its code and the module-level names it binds, deletes and reads."""

    code: str
    end_line: int
    binds: frozenset[str]
    deletes: frozenset[str]
    # Names read while the statement runs (not those read later by a function or a generator's body it makes).
    reads: frozenset[str]


@dataclass(frozen=True)
class Recipe:
    code: str
    needs: tuple[str, ...]  # unpicklable names whose recipes must run first
    stale: tuple[str, ...]  # names it reads that were rebound since it ran


@dataclass
class Plan:
    """What the capture's unpicklable names get: a recipe, or the reason there is none."""

    recipes: dict[str, Recipe] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """The manifest `meta` entry: {"recompute": {name: {"code", "needs"}}}, or nothing when no recipe."""
        if not self.recipes:
            return {}
        return {META_KEY: {n: {"code": r.code, "needs": list(r.needs)} for n, r in self.recipes.items()}}

    def warnings(self, unpicklable: Mapping[str, str]) -> list[str]:
        """One line per unpicklable name (with its pickling error), saying what the runtime gets and why."""
        lines = []
        for name, reason in sorted(unpicklable.items()):
            recipe = self.recipes.get(name)
            if recipe is None:
                why = self.missing.get(name, "no cell run in this kernel assigns it")
                lines.append(
                    f"kernelhop: variable {name!r} stays local: {reason}; it is not rebuilt on the runtime ({why}), "
                    "so using it there raises an error"
                )
                continue
            note = f"it cannot be pickled: {reason}"
            if recipe.stale:
                names = ", ".join(repr(n) for n in recipe.stale)
                if len(recipe.stale) == 1:
                    note += f"; it reads {names}, which was rebound since: the value it has now is used"
                else:
                    note += f"; it reads {names}, which were rebound since: the values they have now are used"
            head = f"kernelhop: variable {name!r} is rebuilt on the runtime by re-running"
            if "\n" in recipe.code:
                lines.append(f"{head} ({note}):\n    " + recipe.code.replace("\n", "\n    "))
            else:
                lines.append(f"{head}: {recipe.code} ({note})")
        return lines


def find_recipes(cells: Sequence[str], unpicklable: Iterable[str], stopped_at: Mapping[int, int] | None = None) -> Plan:
    """The recipes for ``unpicklable`` from ``cells`` (the transformed sources of ``In``, oldest first).

    ``stopped_at`` maps the index in ``cells`` of a cell that raised to the line it stopped at (0: it never ran).
    """
    stopped_at = stopped_at or {}
    stmts: list[Statement] = []
    for i, source in enumerate(cells):
        stop = stopped_at.get(i)
        stmts.extend(s for s in _statements(source) if stop is None or s.end_line < stop)
    last: dict[str, int] = {}
    for k, s in enumerate(stmts):
        for name in s.binds | s.deletes:
            last[name] = k

    wanted = set(unpicklable)
    plan = Plan()

    def resolve(name: str) -> str | None:
        """None when ``name`` has a recipe in ``plan``, else why it has none."""
        if name in plan.recipes:
            return None
        if name in plan.missing:
            return plan.missing[name]
        k = last.get(name)
        if k is None:
            why = "no cell run in this kernel assigns it: made by exec, a module or a function?"
        elif name not in stmts[k].binds:
            why = "the last cell statement naming it deletes it"
        else:
            made = recipe(stmts[k], k)
            if isinstance(made, Recipe):
                plan.recipes[name] = made
                return None
            why = made
        plan.missing[name] = why
        return why

    def recipe(s: Statement, k: int) -> Recipe | str:
        """The recipe of statement ``k``, or why it cannot be one."""
        needs, stale = [], []
        for read in sorted(s.reads):
            rebound = last.get(read, -1) > k
            if read in wanted:
                # Strictly earlier than k (a later binding is refused), so the needs never form a cycle.
                if rebound:
                    return f"its statement read {read!r}, which cannot be pickled and was rebound since"
                if resolve(read) is not None:
                    return f"its statement reads {read!r}, which cannot be pickled or rebuilt"
                needs.append(read)
            elif rebound:
                stale.append(read)
        return Recipe(s.code, tuple(needs), tuple(stale))

    for name in sorted(wanted):
        resolve(name)
    return plan


class CellLog:
    """The cells this kernel ran, and where each one that raised stopped: statements from there on never ran."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        # index in In -> (its source, the line it stopped at); the source tells an entry from a history reset since.
        self.stopped_at: dict[int, tuple[str, int]] = {}
        shell.events.register("post_run_cell", self._after_cell)

    def close(self) -> None:
        # Closing twice is fine: unloading the extension closes its magics once per kind (line and cell).
        if self._after_cell in self.shell.events.callbacks["post_run_cell"]:
            self.shell.events.unregister("post_run_cell", self._after_cell)

    def sources(self) -> list[str]:
        history = getattr(self.shell, "history_manager", None)
        return list(history.input_hist_parsed) if history is not None else []

    def plan(self, unpicklable: Iterable[str]) -> Plan:
        cells = self.sources()
        stopped = {i: line for i, (src, line) in self.stopped_at.items() if i < len(cells) and cells[i] == src}
        return find_recipes(cells, unpicklable, stopped)

    def _after_cell(self, result: Any) -> None:
        if not result.info.store_history:
            return  # not in In, so never read as a recipe
        # The cell was appended to the history before it ran; its index there is what find_recipes counts by.
        cells = self.sources()
        if result.error_before_exec is not None:
            self.stopped_at[len(cells) - 1] = (cells[-1], 0)
        elif result.error_in_exec is not None:
            tb = result.error_in_exec.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_name != "<module>":
                tb = tb.tb_next
            # The first module-level frame is the cell's own (IPython compiles each top-level statement as a module).
            self.stopped_at[len(cells) - 1] = (cells[-1], tb.tb_lineno if tb is not None else 0)


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
    for sub in _module_scope_nodes(node):
        if isinstance(sub, ast.Delete):
            deletes.update(t.id for t in sub.targets if isinstance(t, ast.Name))
        elif isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
            binds.add(sub.target.id)  # a walrus in a comprehension binds in the module
        elif isinstance(sub, ast.AnnAssign) and sub.value is None and isinstance(sub.target, ast.Name):
            binds.discard(sub.target.id)  # `x: int` alone binds nothing
    # symtable counts `del x` as an assignment; a name both deleted and bound stays bound (the later wins at run
    # time, and either way re-running the statement reproduces it).
    only_deleted = {n for n in deletes if not _stores(node, n)}
    binds -= only_deleted
    return Statement(code, node.end_lineno or node.lineno, frozenset(binds), frozenset(only_deleted), frozenset(reads))


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
