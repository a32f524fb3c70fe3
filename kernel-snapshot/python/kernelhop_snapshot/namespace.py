"""The user's part of an IPython namespace: what a snapshot captures."""

from __future__ import annotations

import re
from typing import Any

from .placeholders import Placeholder

# IPython's own names (history, output cache, the shell) and the module dunders every namespace has.
_IPYTHON_NAMES = frozenset(
    {
        "In", "Out", "_ih", "_oh", "_dh", "_", "__", "___", "_i", "_ii", "_iii",
        "get_ipython", "exit", "quit", "_exit_code",
        "__builtins__", "__builtin__", "__name__", "__doc__", "__package__", "__loader__", "__spec__", "__file__",
        "__cached__",
    }
)  # fmt: skip
_HISTORY_NAME = re.compile(r"_i?\d+")
_MISSING = object()


def user_namespace(shell: Any) -> dict[str, Any]:
    """``shell.user_ns`` minus IPython's own names, minus what the shell hid (while it still holds the object the
    shell put there: a user who rebinds a hidden name made it theirs), minus placeholders."""
    hidden = shell.user_ns_hidden
    out = {}
    for name, value in shell.user_ns.items():
        if name in _IPYTHON_NAMES or _HISTORY_NAME.fullmatch(name):
            continue
        if hidden.get(name, _MISSING) is value:
            continue
        if type(value) is Placeholder:
            continue
        out[name] = value
    return out
