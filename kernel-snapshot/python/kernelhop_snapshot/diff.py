"""What changed between two snapshots, in the terms a hop needs: groups to bring home, names to delete."""

from __future__ import annotations

from dataclasses import dataclass

from .manifest import Group, Manifest


@dataclass(frozen=True)
class ManifestDiff:
    changed_groups: list[Group]
    changed_names: list[str]
    deleted_names: list[str]


def diff(old: Manifest | None, new: Manifest) -> ManifestDiff:
    """Groups of ``new`` that ``old`` lacks (equal names, pickle and buffers make a group unchanged), their names,
    and the names ``old`` carried that ``new`` neither carries nor lists as unpicklable.

    Names unpicklable in either manifest are never deleted: they stay wherever they still live (the kernel keeps
    its own, the worker only ever had a placeholder).
    """
    old_keys = set() if old is None else {g.key for g in old.groups}
    changed = [g for g in new.groups if g.key not in old_keys]
    changed_names = sorted(n for g in changed for n in g.names)
    kept = set(new.names()) | set(new.unpicklable)
    deleted = [] if old is None else sorted(n for n in old.names() if n not in kept)
    return ManifestDiff(changed_groups=changed, changed_names=changed_names, deleted_names=deleted)
