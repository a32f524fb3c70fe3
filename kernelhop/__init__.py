"""kernelhop: run one notebook cell on a pooled GPU with the kernel's whole state (`%load_ext kernelhop`)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kernelhop")
except PackageNotFoundError:  # run from a checkout on PYTHONPATH, as scripts/gpu-check.sh does on a bare GPU host
    __version__ = "0+checkout"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where `jupyter labextension develop` finds the prebuilt frontend."""
    return [{"src": "labextension", "dest": "kernelhop-labextension"}]


def load_ipython_extension(ip) -> None:
    from .magics.gpu import GpuMagics
    from .magics.snapshot import load_ipython_extension as load_snapshots

    ip.register_magics(GpuMagics(ip))
    load_snapshots(ip)


def unload_ipython_extension(ip) -> None:
    from .magics.gpu import GpuMagics
    from .magics.snapshot import unload_ipython_extension as unload_snapshots

    unload_snapshots(ip)
    # IPython has no unregister: take out the entries register_magics made, and close the gateway connection.
    for kind in ("line", "cell"):
        fn = ip.magics_manager.magics[kind].get("gpu")
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, GpuMagics):
            del ip.magics_manager.magics[kind]["gpu"]
            owner.close()
    ip.magics_manager.registry.pop(GpuMagics.__name__, None)
