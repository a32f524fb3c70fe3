"""Placeholders stand where a variable could not be carried, so touching it fails loudly instead of silently."""

from __future__ import annotations


class UnavailableVariableError(RuntimeError):
    """A variable was not carried by the snapshot (its value could not be pickled)."""

    def __init__(self, name: str, type_name: str, reason: str) -> None:
        super().__init__(
            f"variable {name!r} ({type_name}) is not available here: it could not be captured ({reason}). "
            f"It is still intact in the kernel it came from; recreate it in this cell if you need it here."
        )
        self.name = name
        self.type_name = type_name
        self.reason = reason


def _raise(self: Placeholder, *args: object, **kwargs: object) -> None:
    raise object.__getattribute__(self, "_error")()


class Placeholder:
    """Stands for an unpicklable variable; any use raises UnavailableVariableError (``repr`` says what it is)."""

    __slots__ = ("_kh_name", "_kh_type", "_kh_reason")

    def __init__(self, name: str, type_name: str, reason: str) -> None:
        object.__setattr__(self, "_kh_name", name)
        object.__setattr__(self, "_kh_type", type_name)
        object.__setattr__(self, "_kh_reason", reason)

    @property
    def entry(self) -> dict[str, str]:
        """The manifest's ``unpicklable`` entry this placeholder stands for."""
        get = object.__getattribute__
        return {"type": get(self, "_kh_type"), "reason": get(self, "_kh_reason")}

    def _error(self) -> UnavailableVariableError:
        get = object.__getattribute__
        return UnavailableVariableError(get(self, "_kh_name"), get(self, "_kh_type"), get(self, "_kh_reason"))

    def __getattribute__(self, attr: str) -> object:
        if attr in ("entry", "_error", "__class__", "__repr__"):
            return object.__getattribute__(self, attr)
        if attr.startswith(("_repr_", "_ipython_")):
            # IPython's display probes these with getattr(obj, name, None); let it fall back to repr.
            raise AttributeError(attr)
        raise object.__getattribute__(self, "_error")()

    def __repr__(self) -> str:
        get = object.__getattribute__
        return (
            f"<unavailable variable {get(self, '_kh_name')!r} ({get(self, '_kh_type')}): "
            f"not captured: {get(self, '_kh_reason')}>"
        )

    __setattr__ = __delattr__ = __call__ = __str__ = __format__ = __bool__ = __len__ = __iter__ = _raise
    __getitem__ = __setitem__ = __delitem__ = __contains__ = __hash__ = __eq__ = __ne__ = _raise
    __lt__ = __le__ = __gt__ = __ge__ = __enter__ = __exit__ = __reduce__ = __reduce_ex__ = __getstate__ = _raise
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _raise
    __floordiv__ = __mod__ = __pow__ = __matmul__ = __neg__ = __pos__ = __abs__ = __invert__ = _raise
    __int__ = __float__ = __index__ = __array__ = __await__ = __aiter__ = __anext__ = __next__ = _raise


# Where a RemoteOnly variable lives -> what its error says about this side, and what to do.
_ELSEWHERE = {
    "runtime": (
        "lives on the runtime only: this kernel cannot rebuild it",
        "%%gpu cells still get it as the runtime left it; to use it here, install what it needs in this kernel "
        "and run the cell that made it again.",
    ),
    "kernel": (
        "lives in the kernel only: this runtime cannot rebuild it",
        "The kernel keeps it as it is; to use it in %%gpu cells, install what it needs on the runtime host.",
    ),
}


class RemoteOnlyError(UnavailableVariableError):
    """A variable made on the other side of a hop that this process cannot rebuild (a module or class it lacks)."""

    def __init__(self, name: str, type_name: str, reason: str, lives_in: str) -> None:
        where, advice = _ELSEWHERE[lives_in]
        RuntimeError.__init__(self, f"variable {name!r} ({type_name}) {where} ({reason}). {advice}")
        self.name = name
        self.type_name = type_name
        self.reason = reason
        self.lives_in = lives_in


class RemoteOnly(Placeholder):
    """Stands for a variable that arrived from the other side of a hop but could not be unpickled here; the
    Capturer sends its group back unchanged while the name still holds this placeholder."""

    __slots__ = ("_kh_lives_in",)

    def __init__(self, name: str, type_name: str, reason: str, lives_in: str = "runtime") -> None:
        if lives_in not in _ELSEWHERE:
            raise ValueError(f"lives_in must be one of {sorted(_ELSEWHERE)}, got {lives_in!r}")
        super().__init__(name, type_name, reason)
        object.__setattr__(self, "_kh_lives_in", lives_in)

    def _error(self) -> UnavailableVariableError:
        get = object.__getattribute__
        return RemoteOnlyError(
            get(self, "_kh_name"), get(self, "_kh_type"), get(self, "_kh_reason"), get(self, "_kh_lives_in")
        )

    def __repr__(self) -> str:
        get = object.__getattribute__
        where = _ELSEWHERE[get(self, "_kh_lives_in")][0].split(":")[0]
        return f"<variable {get(self, '_kh_name')!r} ({get(self, '_kh_type')}) {where}: {get(self, '_kh_reason')}>"
