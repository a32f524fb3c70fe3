"""State a cell depends on that lives in modules, not in the namespace, carried with a hop both ways.

The global random generators, the environment variables the session changed, and library options that change what a
cell computes or prints (docs/ARCHITECTURE.md, "Module state"). Each kind is a ``ModuleState`` provider: a name, the
module it belongs to, and ``read``/``write`` of its entries (key -> value). A provider is read only while its module
is in ``sys.modules`` on the kernel: the hop never imports a library to read its options.

The state travels in the manifest's ``meta`` under META_KEY, one base64 pickle per provider, so neither the gateway nor
the runtime protocol knows about it. The kernel sends each provider's full state every hop (a warm worker sees the
kernel's current values). The worker resets each provider to its own start-up values, applies the kernel's, runs the
cell, and sends back only the entries the cell changed (``reset``: entries back to their start-up value, for the
environment a variable unset). The kernel applies those only after the whole hop succeeded.

A library adds its own state with ``register(provider)`` or an entry point in the group ENTRY_POINT_GROUP naming a
provider object (or a class to instantiate); both sides must have it for it to travel.
"""

from __future__ import annotations

import base64
import importlib
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Collection, Mapping
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import cloudpickle

META_KEY = "module_state"
ENTRY_POINT_GROUP = "kernelhop.module_state"


@runtime_checkable
class ModuleState(Protocol):
    """One piece of state that lives in a module. ``read`` returns its entries; ``write`` sets ``values`` (a subset of
    the entries) and returns ``reset`` entries to their start-up value (only the environment has such entries: a read
    lists every other provider's keys always)."""

    name: str
    module: str

    def read(self) -> dict[str, Any]: ...

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None: ...


# -- the generators ---------------------------------------------------------------------------------------------


class PythonRandom:
    name, module = "random", "random"

    def read(self) -> dict[str, Any]:
        import random

        return {"state": random.getstate()}

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        import random

        if "state" in values:
            random.setstate(values["state"])


class NumpyRandom:
    """numpy's legacy global RandomState (``np.random.seed``, ``np.random.random``); Generator objects travel in the
    namespace like any variable."""

    name, module = "numpy.random", "numpy"

    def read(self) -> dict[str, Any]:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
        return {"state": (kind, keys.tobytes(), pos, has_gauss, gauss)}

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        import numpy as np

        if "state" in values:
            kind, keys, pos, has_gauss, gauss = values["state"]
            np.random.set_state((kind, np.frombuffer(keys, dtype=np.uint32), pos, has_gauss, gauss))


class TorchRandom:
    """torch's CPU generator and its CUDA generators, by device ("cuda:0", ...). CUDA states are read only where this
    process has initialized CUDA (reading would initialize it), and a process without that device (a kernel without
    CUDA) keeps the state it was given and sends it back."""

    name, module = "torch.random", "torch"

    def __init__(self) -> None:
        self._cuda: dict[str, bytes] = {}

    def read(self) -> dict[str, Any]:
        import torch

        state: dict[str, Any] = {"cpu": torch.get_rng_state().numpy().tobytes(), **self._cuda}
        if torch.cuda.is_initialized():
            for index, device_state in enumerate(torch.cuda.get_rng_state_all()):
                state[f"cuda:{index}"] = device_state.numpy().tobytes()
        return state

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        import torch

        for key, raw in values.items():
            tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            if key == "cpu":
                torch.set_rng_state(tensor)
                continue
            self._cuda[key] = raw
            index = int(key.partition(":")[2])
            # Before CUDA is initialized torch queues the state and sets it at initialization.
            if torch.cuda.is_available() and index < torch.cuda.device_count():
                torch.cuda.set_rng_state(tensor, index)


# -- the environment --------------------------------------------------------------------------------------------

# Variables that belong to the host or process they are set in (paths, devices, the terminal, Jupyter's and
# kernelhop's own): never read into a hop nor applied from one, either way.
HOST_VARIABLES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "HOSTNAME", "SHLVL", "_",
        "TMPDIR", "TEMP", "TMP", "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
        "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH",
        "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "MPLBACKEND", "TERM", "COLUMNS", "LINES", "CLICOLOR",
        "CLICOLOR_FORCE", "FORCE_COLOR", "PAGER", "GIT_PAGER", "DISPLAY",
    }
)  # fmt: skip
HOST_PREFIXES = ("KERNELHOP_", "JPY_", "JUPYTER_", "PYDEVD_", "NVIDIA_", "SSH_", "XDG_")


def host_variable(name: str) -> bool:
    return name in HOST_VARIABLES or name.startswith(HOST_PREFIXES)


def startup_environment() -> dict[str, str]:
    """The environment this process started with: /proc/self/environ keeps it whatever os.environ became since (Linux);
    elsewhere, os.environ now."""
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return dict(os.environ)
    pairs = (entry.partition(b"=") for entry in raw.split(b"\0") if entry)
    return {os.fsdecode(k): os.fsdecode(v) for k, _, v in pairs}


class Environment:
    """The variables this process set, changed (name -> value) or unset (name -> None) against its start-up
    environment, host variables left out. Values are never shown or logged by kernelhop, whatever their name."""

    name, module = "os.environ", "os"

    def __init__(self, startup: Mapping[str, str] | None = None) -> None:
        self._startup = dict(startup_environment() if startup is None else startup)

    def host_changes(self) -> set[str]:
        """The host variables this process changed against its start-up environment (which never travel)."""
        now = os.environ
        names = now.keys() | self._startup.keys()
        return {n for n in names if host_variable(n) and now.get(n) != self._startup.get(n)}

    def read(self) -> dict[str, Any]:
        now = os.environ
        changed: dict[str, Any] = {n: v for n, v in now.items() if self._startup.get(n) != v and not host_variable(n)}
        changed.update((n, None) for n in self._startup.keys() - now.keys() if not host_variable(n))
        return changed

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        wanted = {**{n: self._startup.get(n) for n in reset}, **values}
        for name, value in wanted.items():
            if host_variable(name):
                continue
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- library options --------------------------------------------------------------------------------------------


def _quietly(action: Callable[[], Any]) -> Any:
    """Run ``action`` with warnings silenced (deprecated options warn when read or set). catch_warnings saves and
    restores the filters list itself, so the warnings provider reads the user's filters unchanged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return action()


def _set_each_quietly(set_one: Callable[[str, Any], Any], values: Mapping[str, Any]) -> None:
    def apply() -> None:
        for key, value in values.items():
            set_one(key, value)

    _quietly(apply)


class PandasOptions:
    name, module = "pandas.options", "pandas"

    def read(self) -> dict[str, Any]:
        import pandas as pd
        from pandas._config import config  # the registry of options; pandas has no public list of keys

        keys = [k for k in config._registered_options if k not in config._deprecated_options]
        return _quietly(lambda: {k: pd.get_option(k) for k in keys})

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        import pandas as pd

        _set_each_quietly(pd.set_option, values)


class NumpyPrintOptions:
    name, module = "numpy.printoptions", "numpy"

    def read(self) -> dict[str, Any]:
        import numpy as np

        return np.get_printoptions()

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        import numpy as np

        if values:
            # set_printoptions resets the formatter unless given one: always pass the whole set.
            np.set_printoptions(**{**np.get_printoptions(), **values})


class NumpyErrorState:
    name, module = "numpy.seterr", "numpy"

    def read(self) -> dict[str, Any]:
        import numpy as np

        return np.geterr()

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        import numpy as np

        if values:
            np.seterr(**values)


class MatplotlibRcParams:
    """rcParams but the backend, which each process picks for itself (the worker's renders inline figures)."""

    name, module = "matplotlib.rcParams", "matplotlib"
    skipped = frozenset({"backend", "backend_fallback", "interactive"})

    def read(self) -> dict[str, Any]:
        import matplotlib

        # dict.items skips RcParams' own lookup, which resolves (imports) the backend when "backend" is read.
        return {k: v for k, v in dict.items(matplotlib.rcParams) if k not in self.skipped}

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        import matplotlib

        _set_each_quietly(matplotlib.rcParams.__setitem__, {k: v for k, v in values.items() if k not in self.skipped})


class WarningsFilters:
    name, module = "warnings.filters", "warnings"

    def read(self) -> dict[str, Any]:
        return {"filters": list(warnings.filters)}

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        if "filters" in values:
            # resetwarnings tells the warnings machinery the filters changed (it drops the "already shown" caches).
            warnings.resetwarnings()
            warnings.filters[:] = values["filters"]


class TorchOptions:
    """torch's default dtype, deterministic-algorithm mode, cuDNN flags and float32 matmul precision."""

    name, module = "torch.options", "torch"

    def read(self) -> dict[str, Any]:
        import torch

        return {
            "default_dtype": torch.get_default_dtype(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn.deterministic": torch.backends.cudnn.deterministic,
            "cudnn.benchmark": torch.backends.cudnn.benchmark,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }

    def write(self, values: Mapping[str, Any], reset: Collection[str]) -> None:
        import torch

        if "default_dtype" in values:
            torch.set_default_dtype(values["default_dtype"])
        if "deterministic" in values or "deterministic_warn_only" in values:
            now = self.read()
            torch.use_deterministic_algorithms(
                values.get("deterministic", now["deterministic"]),
                warn_only=values.get("deterministic_warn_only", now["deterministic_warn_only"]),
            )
        if "cudnn.deterministic" in values:
            torch.backends.cudnn.deterministic = values["cudnn.deterministic"]
        if "cudnn.benchmark" in values:
            torch.backends.cudnn.benchmark = values["cudnn.benchmark"]
        if "float32_matmul_precision" in values:
            torch.set_float32_matmul_precision(values["float32_matmul_precision"])


# -- the registry -------------------------------------------------------------------------------------------------


def builtin_providers() -> list[ModuleState]:
    return [
        PythonRandom(),
        NumpyRandom(),
        TorchRandom(),
        Environment(),
        PandasOptions(),
        NumpyPrintOptions(),
        NumpyErrorState(),
        MatplotlibRcParams(),
        WarningsFilters(),
        TorchOptions(),
    ]


_registered: list[ModuleState] = []


def register(provider: ModuleState) -> None:
    """Carry ``provider``'s state with every hop of this process made from now on (on both sides to travel)."""
    if not isinstance(provider, ModuleState):
        raise TypeError(f"{provider!r} is not a ModuleState: it needs name, module, read() and write(values, reset)")
    _registered.append(provider)


def plugin_providers(notes: list[str]) -> list[ModuleState]:
    """The providers named by entry points; one that fails to load is left out, with a note saying why."""
    found: list[ModuleState] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            provider = obj() if isinstance(obj, type) else obj
            if not isinstance(provider, ModuleState):
                raise TypeError("it is not a ModuleState (name, module, read(), write(values, reset))")
        except Exception as exc:
            notes.append(f"kernelhop: module state {ep.name!r} ({ep.value}) is not carried: {_describe(exc)}")
            continue
        found.append(provider)
    return found


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # an ambiguous comparison (arrays) counts as a change: applying it again is harmless
        return False


def _same_entries(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


def _encode(values: Mapping[str, Any], reset: Collection[str]) -> str:
    payload = (dict(values), sorted(reset))
    try:
        data = pickle.dumps(payload, protocol=5)
    except Exception:  # a notebook function or class (a pandas float_format lambda): by value
        data = cloudpickle.dumps(payload, protocol=5)
    return base64.b64encode(data).decode("ascii")


def _decode(text: Any) -> tuple[dict[str, Any], list[str]]:
    values, reset = pickle.loads(base64.b64decode(text, validate=True))
    if not isinstance(values, dict) or not isinstance(reset, list):
        raise ValueError("not a (values, reset) pair")
    return values, reset


def _carried(meta: Mapping[str, Any]) -> dict[str, Any]:
    carried = meta.get(META_KEY)
    return carried if isinstance(carried, dict) else {}


class _Side:
    def __init__(self, providers: list[ModuleState] | None) -> None:
        self.notes: list[str] = []
        self._providers = providers

    def providers(self) -> list[ModuleState]:
        # Entry points are looked up once, at the first hop, not at import (importlib.metadata scans every package).
        if self._providers is None:
            self._providers = [*builtin_providers(), *plugin_providers(self.notes)]
        return [*self._providers, *_registered]

    def _read(self, provider: ModuleState) -> dict[str, Any] | None:
        try:
            return provider.read()
        except Exception as exc:
            self.notes.append(f"kernelhop: {provider.name} is not carried: reading it failed: {_describe(exc)}")
            return None

    def _write(self, provider: ModuleState, values: Mapping[str, Any], reset: Collection[str], where: str) -> None:
        try:
            provider.write(values, reset)
        except Exception as exc:
            self.notes.append(f"kernelhop: {provider.name} could not be set {where}: {_describe(exc)}")

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes


class KernelModuleState(_Side):
    """The kernel's side: what goes out with each hop, and applying what the cell changed once the hop succeeded."""

    def __init__(self, providers: list[ModuleState] | None = None) -> None:
        super().__init__(providers)
        # Entries that came home for a provider whose module this kernel has not imported: sent back each hop, and
        # set here once the module is imported.
        self._kept: dict[str, dict[str, Any]] = {}
        # Host variables changed before kernelhop was loaded (ipykernel sets TERM, PAGER, PYDEVD_*, ...) are not the
        # notebook's doing: only later changes get the note that they stay here.
        self._noted_env = Environment().host_changes()
        # Per provider, the state the last hop sent and its encoding.
        self._sent: dict[str, tuple[dict[str, Any], str]] = {}

    def outgoing(self) -> dict[str, Any]:
        """The manifest meta to send: every provider whose module is imported here (or that holds kept entries)."""
        out: dict[str, str] = {}
        for provider in self.providers():
            kept = self._kept.get(provider.name)
            if provider.module not in sys.modules:
                if kept:
                    out[provider.name] = _encode(kept, ())
                continue
            if kept:
                self._write(provider, self._kept.pop(provider.name), (), "here")
            state = self._read(provider)
            if state is None:
                continue
            if isinstance(provider, Environment):
                self._note_host_variables(provider.host_changes())
            last = self._sent.get(provider.name)
            if last is not None and _same_entries(last[0], state):
                out[provider.name] = last[1]  # unchanged since the last hop (an unseeded generator): no pickling
                continue
            try:
                out[provider.name] = _encode(state, ())
            except Exception as exc:
                self.notes.append(f"kernelhop: {provider.name} is not carried: it cannot be pickled: {_describe(exc)}")
                continue
            self._sent[provider.name] = (state, out[provider.name])
        return {META_KEY: out} if out else {}

    def _note_host_variables(self, changed: set[str]) -> None:
        for name in sorted(changed - self._noted_env):
            self.notes.append(
                f"kernelhop: environment variable {name} changed in this kernel is not carried to the runtime: "
                "it belongs to each host"
            )
        self._noted_env |= changed

    def incoming(self, meta: Mapping[str, Any]) -> Callable[[], None]:
        """What the worker's manifest says the cell changed, decoded now; the returned callable applies it. A state
        this kernel cannot read (an option set to an object of a package only the runtime has) does not fail the hop:
        it is left out with a note, and this kernel keeps its own."""
        by_name = {p.name: p for p in self.providers()}
        changes: list[tuple[str, dict[str, Any], list[str]]] = []
        for name, text in _carried(meta).items():
            if name not in by_name:
                continue  # a provider only the runtime has
            try:
                values, reset = _decode(text)
            except Exception as exc:
                self.notes.append(f"kernelhop: the cell's {name} stays on the runtime: it cannot be read here: {exc}")
                continue
            changes.append((name, values, reset))

        def apply() -> None:
            for name, values, reset in changes:
                provider = by_name.get(name)
                if provider is None:
                    continue
                if provider.module in sys.modules:
                    self._write(provider, values, reset, "in this kernel")
                else:
                    kept = {k: v for k, v in self._kept.get(name, {}).items() if k not in reset}
                    self._kept[name] = {**kept, **values}

        return apply


class WorkerModuleState(_Side):
    """The worker's side: before the cell, its own start-up values with the kernel's on top; after it, what changed.

    Made when the worker starts (after its preloads), so the start-up values are those no session touched: a cell of
    a session never sees what an earlier cell on this worker set and the kernel did not send."""

    def __init__(self, providers: list[ModuleState] | None = None) -> None:
        super().__init__(providers)
        self._startup: dict[str, dict[str, Any]] = {}
        for provider in self.providers():
            if provider.module in sys.modules:
                self._remember_startup(provider)
        self._target: dict[str, dict[str, Any]] = {}
        # Per provider, the kernel's last encoded state and its decoding: the same text is not unpickled again.
        self._received: dict[str, tuple[str, dict[str, Any]]] = {}

    def _remember_startup(self, provider: ModuleState) -> None:
        state = self._read(provider)
        if state is not None:
            self._startup[provider.name] = state

    def before_cell(self, meta: Mapping[str, Any]) -> None:
        sent = _carried(meta)
        self._target = {}
        for provider in self.providers():
            text = sent.get(provider.name)
            if text is not None and provider.module not in sys.modules:
                # The kernel has it imported, so its options must hold here too if the cell uses it.
                try:
                    importlib.import_module(provider.module)
                except Exception as exc:
                    self.notes.append(f"kernelhop: {provider.name} is not applied on the runtime: {_describe(exc)}")
                    continue
            if provider.module not in sys.modules:
                continue
            if provider.name not in self._startup:
                self._remember_startup(provider)
            values: dict[str, Any] = {}
            if text is not None:
                last = self._received.get(provider.name)
                if last is not None and last[0] == text:
                    values = last[1]
                else:
                    try:
                        values, _ = _decode(text)
                    except Exception as exc:
                        self.notes.append(f"kernelhop: {provider.name} is not applied on the runtime: {_describe(exc)}")
                        continue
                    self._received[provider.name] = (text, values)
            target = {**self._startup.get(provider.name, {}), **values}
            current = self._read(provider)
            if current is None:
                continue
            todo = {k: v for k, v in target.items() if k not in current or not _same(current[k], v)}
            self._write(provider, todo, current.keys() - target.keys(), "on the runtime")
            self._target[provider.name] = target

    def after_cell(self) -> dict[str, Any]:
        """The manifest meta for the kernel: per provider, the entries the cell changed (those of a module the cell
        imported first: all of them)."""
        out: dict[str, str] = {}
        for provider in self.providers():
            if provider.module not in sys.modules:
                continue
            after = self._read(provider)
            if after is None:
                continue
            target = self._target.get(provider.name, {})
            changed = {k: v for k, v in after.items() if k not in target or not _same(target[k], v)}
            reset = [k for k in target if k not in after]
            if changed or reset:
                try:
                    out[provider.name] = _encode(changed, reset)
                except Exception as exc:
                    self.notes.append(f"kernelhop: the cell's {provider.name} does not come home: {_describe(exc)}")
        return {META_KEY: out} if out else {}
