"""Which names of a namespace a cell can reach: what a lazy restore must bring before the cell runs.

The answer is over-approximate by construction (docs/ARCHITECTURE.md, "Lazy restore"). A cell reads or binds a
global only through a name in some code object's ``co_names``: the cell's own code, or a function of the notebook it
reaches through an object it names (a function, a class's methods, an instance's class, a closure, a default). So
the reach is every ``co_names`` entry of that code, every identifier inside its string constants (``%time f(x)``,
``df.query("a > @limit")`` and ``eval`` texts name globals in strings), and, transitively, the same for each notebook
function found by walking the objects of the names reached. The other way to reach a global is through the namespace
dict itself (``globals()``, ``vars()``, ``sys.modules["__main__"]``, a frame's ``f_globals``, a magic); code that
names any of those, or an object that holds the namespace dict, reaches everything; so does ``from m import *``
(it binds whatever names ``m`` exports, and none of them is in ``co_names``), code that cannot be compiled or an
object graph too big to walk.
"""

from __future__ import annotations

import ast
import gc
import re
import types
from collections.abc import Mapping
from typing import Any

# Names through which code can read or bind globals without naming them: seeing one, assume the whole namespace.
DYNAMIC_NAMES = frozenset(
    {
        "globals",
        "locals",
        "vars",
        "eval",
        "exec",
        "dir",
        "__import__",
        "__main__",
        "__dict__",
        "modules",
        "get_ipython",
        "user_ns",
        "_getframe",
        "currentframe",
        "f_globals",
        "f_locals",
        "f_back",
        "stack",
    }
)
# Objects walked to find the notebook's functions behind the names a cell reaches; more means "everything".
WALK_BUDGET = 200_000
# Longer string constants are data, not code that names globals; their identifiers are not read.
_MAX_SCANNED_STRING = 100_000

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ATOMS = (int, float, complex, bool, str, bytes, bytearray, type(None), range, types.ModuleType, types.CodeType)


def cell_reach(
    source: str,
    namespace: Mapping[str, Any],
    *,
    globals_dict: Mapping[str, Any] | None = None,
    budget: int = WALK_BUDGET,
) -> frozenset[str] | None:
    """The names of ``namespace`` that running ``source`` (Python, after IPython's transforms) can read or bind,
    or None when it can reach any of them. ``globals_dict`` is the dict the notebook's functions hold as
    ``__globals__`` (the shell's ``user_global_ns``; default ``namespace`` itself)."""
    try:
        code = compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    if _imports_star(source):
        return None
    walk = _Walk(namespace, namespace if globals_dict is None else globals_dict, budget)
    return walk.run(code)


class _Walk:
    def __init__(self, namespace: Mapping[str, Any], globals_dict: Mapping[str, Any], budget: int) -> None:
        self.namespace = namespace
        self.globals_dict = globals_dict
        self.main = globals_dict.get("__name__", "__main__")
        self.budget = budget
        self.reached: set[str] = set()
        self.seen_objects: set[int] = set()
        self.seen_code: set[int] = set()

    def run(self, code: types.CodeType) -> frozenset[str] | None:
        names = self.code_names(code)
        while names is not None:
            todo = [n for n in names if n in self.namespace and n not in self.reached]
            if not todo:
                return frozenset(self.reached)
            self.reached.update(todo)
            names = self.objects_names([self.namespace[n] for n in todo])
        return None

    def code_names(self, code: types.CodeType) -> set[str] | None:
        out: set[str] = set()
        stack = [code]
        while stack:
            c = stack.pop()
            if id(c) in self.seen_code:
                continue
            self.seen_code.add(id(c))
            out.update(c.co_names)
            consts = list(c.co_consts)
            while consts:
                k = consts.pop()
                if isinstance(k, types.CodeType):
                    stack.append(k)
                elif isinstance(k, str) and len(k) <= _MAX_SCANNED_STRING:
                    out.update(identifiers(k))
                elif isinstance(k, tuple | frozenset):
                    consts.extend(k)
        return None if not out.isdisjoint(DYNAMIC_NAMES) else out

    def objects_names(self, roots: list[Any]) -> set[str] | None:
        """Names used by the notebook's functions reachable from ``roots``; None past the budget or on dynamic
        access."""
        out: set[str] = set()
        stack = list(roots)
        while stack:
            o = stack.pop()
            if o is self.globals_dict:
                return None  # an object holding the namespace itself can reach any name through it
            if isinstance(o, _ATOMS) or id(o) in self.seen_objects:
                continue
            self.seen_objects.add(id(o))
            self.budget -= 1
            if self.budget < 0:
                return None
            if isinstance(o, types.FunctionType):
                # A library's function reads its own module's globals, never the notebook's.
                if o.__globals__ is not self.globals_dict:
                    continue
                names = self.code_names(o.__code__)
                if names is None:
                    return None
                out |= names
                stack.extend(o.__defaults__ or ())
                stack.extend((o.__kwdefaults__ or {}).values())
                stack.extend(_cell_contents(o.__closure__ or ()))
                stack.extend(o.__dict__.values())
                continue
            if isinstance(o, type):
                # Only the notebook's classes hold the notebook's methods (their bases may be the notebook's too).
                if o.__module__ == self.main:
                    stack.extend(vars(o).values())
                    stack.extend(o.__bases__)
                continue
            stack.extend(gc.get_referents(o))
        return out


def _imports_star(source: str) -> bool:
    # Only the module level may import *; `if`/`try` blocks there may hold one too, so walk the whole tree.
    if "*" not in source:
        return False
    tree = ast.parse(source)
    return any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(tree))


def identifiers(text: str) -> list[str]:
    """The Python identifiers in ``text`` (names a string may mention: ``"a > @limit"`` names ``a`` and ``limit``)."""
    return _IDENTIFIER.findall(text)


def _cell_contents(cells: tuple[types.CellType, ...]) -> list[Any]:
    out = []
    for cell in cells:
        try:
            out.append(cell.cell_contents)
        except ValueError:
            pass  # an empty cell: a variable of the enclosing function not bound yet
    return out
