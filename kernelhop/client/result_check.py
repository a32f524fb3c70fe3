"""What a run's result may change: checked on its manifest before anything of it is unpickled.

A lazy run restores, and its cell can read or bind, only the names the kernel's reach analysis found
(kernelhop_snapshot.reach) and the names that share objects with them (their groups come whole). A result that
changes or deletes any other name the kernel had cannot come from an honest run of that cell: the runtime made it
up. It is refused, naming those names, before a pickle of it runs. Names the cell created are not checked (a cell
may create any name), nor is an eager run (its reach is everything), nor the meta a run carries home (random
generators and library options: any cell may change those). ARCHITECTURE.md, "Threat model", says what a
compromised runtime can still do.
"""

from __future__ import annotations

from kernelhop_snapshot import Manifest
from kernelhop_snapshot import ManifestDiff

from .gateway import KernelhopError


class ResultRefused(KernelhopError):
    """A run's result changes names its cell could not reach; nothing of it was unpickled."""


def out_of_reach(sent: Manifest, changes: ManifestDiff, reach: frozenset[str] | None) -> list[str]:
    """The names the kernel had that ``changes`` (the result against ``sent``) changes or deletes although the
    run could not reach them; [] for an eager run (``reach`` None)."""
    if reach is None:
        return []
    reachable = set(reach)
    for group in sent.groups:
        if not reachable.isdisjoint(group.names):
            reachable.update(group.names)
    had = set(sent.names()) | set(sent.unpicklable)
    changed = {n for g in changes.changed_groups for n in g.names} | set(changes.deleted_names)
    return sorted((changed & had) - reachable)


def check_result(sent: Manifest, changes: ManifestDiff, reach: frozenset[str] | None, runtime: str) -> None:
    names = out_of_reach(sent, changes, reach)
    if names:
        shown = ", ".join(repr(n) for n in names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise ResultRefused(
            f"refused the result of runtime {runtime}: it changes {shown}, which the cell could not reach (its code "
            "names none of them, nor anything sharing objects with them). An honest run cannot do that: the runtime "
            "is broken or compromised; tell the gateway's admin. Nothing of the result was unpickled; the local "
            "namespace is unchanged."
        )
