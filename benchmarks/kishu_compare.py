"""Kishu and kernelhop's snapshot engine side by side, in one real ipykernel on the same state.

The state is benchmarks/snapshot_engine.make_state (numpy arrays, a DataFrame, a torch model, 10,000 small objects;
--scale 1.0 is about 1 GiB). One kernel is started through jupyter_client from this interpreter, on a temporary
notebook with Kishu attached the way `kishu init` attaches it (a silent `init_kishu(<notebook>)`), and then:

  cell 1 builds the state                 -> Kishu commits it (its pre/post_run_cell hooks are timed)
  kernelhop: first capture of the same state into a DirectoryBlobStore
  cell 2 changes 1 MiB of `weights`       -> Kishu commits again
  kernelhop: capture again, parent = the first capture
  Kishu: checkout of commit 1 from commit 2 (incremental: only what changed since commit 1 is loaded)
  cell 3 deletes the state's variables    -> Kishu commits (nothing to store)
  Kishu: checkout of commit 1 from there (every variable is loaded from its database)
  kernelhop: restore of the first capture (a new Capturer, blobs read from the directory store)

Kishu's own work runs in its IPython hooks and `_kishu.checkout`; kernelhop's in silent executions (which fire no
IPython hooks, so Kishu does not commit them). Kishu needs its own venv (its dependencies would clash with the
project's), see benchmarks/RESULTS.md:

    python3 -m venv benchmarks/.kishu-venv
    benchmarks/.kishu-venv/bin/pip install kishu numpy pandas torch==2.13.0 ipykernel jupyter_client nbformat \
        ipython cloudpickle blake3 fastcdc zstandard websockets cryptography
    benchmarks/.kishu-venv/bin/pip install -e . --no-deps
    benchmarks/.kishu-venv/bin/python benchmarks/kishu_compare.py [--scale 1.0] [--experimental-tracker]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jupyter_client
import nbformat

MiB = 1 << 20
HERE = Path(__file__).resolve().parent

# Run silently before Kishu is attached: only underscore names (Kishu ignores those, and refuses to attach to a kernel
# whose namespace already holds variables without a cell history). Timing hooks are registered around Kishu's own
# pre/post_run_cell hooks: IPython calls the callbacks of an event in the order they were registered.
SETUP = """
import time as _time, json as _json, os as _os, sys as _sys
_sys.path.insert(0, {bench_dir!r})
_ip = get_ipython()
_kc = {{"cells": [], "cur": {{}}}}
def _kc_pre_a(*_a): _kc["cur"] = {{"pre_a": _time.perf_counter()}}
def _kc_pre_b(*_a): _kc["cur"]["pre_b"] = _time.perf_counter()
def _kc_post_a(*_a): _kc["cur"]["post_a"] = _time.perf_counter()
def _kc_post_b(*_a):
    _kc["cur"]["post_b"] = _time.perf_counter()
    _kc["cells"].append(_kc["cur"])
_ip.events.register("pre_run_cell", _kc_pre_a)
_ip.events.register("post_run_cell", _kc_post_a)
from kishu import init_kishu
_t = _time.perf_counter()
init_kishu({notebook!r})
_kc["init_s"] = _time.perf_counter() - _t
_ip.events.register("pre_run_cell", _kc_pre_b)
_ip.events.register("post_run_cell", _kc_post_b)
"""

# The cells a user would run (Kishu commits after each).
CELL_BUILD = """\
from snapshot_engine import make_state as _make_state, state_bytes as _state_bytes
_state = _make_state({scale!r})
_kc["state_names"] = sorted(_state)
_kc["state_mib"] = _state_bytes(_state) / 2**20
globals().update(_state)
del _state
"""
CELL_CHANGE = """\
_mid = weights.size // 2
weights[_mid : _mid + 2**20 // 8] += 1.0
"""
CELL_NOOP = "_x = 1 + 1\n"
CELL_DELETE = "del {names}\n"

# kernelhop in the same kernel, silent (no IPython hooks fire, so Kishu does not see these).
KH_SETUP = """
import numpy as _np
from kernelhop_snapshot import Capturer as _Capturer, DirectoryBlobStore as _DirStore, Manifest as _Manifest
_kh_root = {root!r}
def _kh_state():
    return {{n: _ip.user_ns[n] for n in _kc["state_names"]}}
_kh_capturer = _Capturer(_DirStore(_kh_root))
_mid = weights.size // 2
_kc["orig_slice"] = weights[_mid : _mid + 2**20 // 8].copy()
"""
KH_FIRST = """
_t = _time.perf_counter()
_kh_first = _kh_capturer.capture(_kh_state())
_kc["kh_first_s"] = _time.perf_counter() - _t
_kc["kh_first_mib"] = sum(d.size for d in _kh_first.new_blobs) / 2**20
_kc["kh_unpicklable"] = sorted(_kh_first.unpicklable)
"""
KH_SECOND = """
_t = _time.perf_counter()
_kh_second = _kh_capturer.capture(_kh_state(), parent=_kh_first.digest)
_kc["kh_second_s"] = _time.perf_counter() - _t
_kc["kh_second_mib"] = sum(d.size for d in _kh_second.new_blobs) / 2**20
"""
KH_RESTORE = """
_t = _time.perf_counter()
_kh_store = _DirStore(_kh_root)
_kh_restored = _Capturer(_kh_store).restore(_Manifest.from_bytes(_kh_store.get(_kh_first.digest)))
_kc["kh_restore_s"] = _time.perf_counter() - _t
_kc["kh_restore_ok"] = bool(
    sorted(_kh_restored) == _kc["state_names"]
    and _np.array_equal(_kh_restored["weights"][_mid : _mid + 2**20 // 8], _kc["orig_slice"])
    and _np.array_equal(_kh_restored["weights"], weights)
)
del _kh_restored
"""

KISHU_HEAD = "_kishu._kishu_branch.get_head().commit_id"
KISHU_CHECKOUT = """
_t = _time.perf_counter()
_kc["{key}_msg"] = str(_kishu.checkout({commit!r}))
_kc["{key}_s"] = _time.perf_counter() - _t
_kc["{key}_ok"] = bool(
    all(n in _ip.user_ns for n in _kc["state_names"])
    and _np.array_equal(weights[_mid : _mid + 2**20 // 8], _kc["orig_slice"])
)
"""


class Kernel:
    def __init__(self, km: jupyter_client.KernelManager) -> None:
        self.km = km
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.output: list[str] = []

    def _hook(self, msg: dict[str, Any]) -> None:
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            self.output.append(msg["content"]["text"])
        elif kind == "error":
            self.output.append("\n".join(msg["content"]["traceback"]))

    def run(self, code: str, *, silent: bool = False, timeout: float = 3600) -> tuple[float, str]:
        """Runs code; returns the round trip in seconds and what it printed (Kishu's hook errors included)."""
        self.output = []
        start = time.perf_counter()
        reply = self.kc.execute_interactive(
            code, silent=silent, store_history=not silent, timeout=timeout, output_hook=self._hook
        )
        wall = time.perf_counter() - start
        text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(self.output))
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed:\n{code}\n{text}\n" + "\n".join(reply["content"].get("traceback", [])))
        return wall, text

    def eval(self, expression: str) -> Any:
        reply = self.kc.execute_interactive(
            "", silent=True, user_expressions={"r": expression}, timeout=600, output_hook=self._hook
        )
        result = reply["content"]["user_expressions"]["r"]
        if result["status"] != "ok":
            raise RuntimeError(f"{expression}: {result.get('ename')}: {result.get('evalue')}")
        return ast.literal_eval(result["data"]["text/plain"])

    def results(self) -> dict[str, Any]:
        return json.loads(
            self.eval('_json.dumps({k: v for k, v in _kc.items() if k not in ("cur", "orig_slice")}, default=str)')
        )

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def stored_by_commit(db: Path) -> dict[str, tuple[float, list[str]]]:
    """MiB that Kishu stored for each commit, and which variable snapshots."""
    con = sqlite3.connect(db)
    rows = con.execute("select commit_id, versioned_name, sum(length(data)) from variable_snapshot group by 1, 2")
    out: dict[str, tuple[float, list[str]]] = {}
    for commit, versioned_name, size in rows:
        mib, names = out.get(commit, (0.0, []))
        out[commit] = (mib + size / MiB, names + [versioned_name.split(",", 1)[1]])
    con.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 is about 1 GiB")
    parser.add_argument(
        "--experimental-tracker",
        action="store_true",
        help="Kishu's [IDGRAPH] experimental_tracker: hashes arrays and skips shared globals when it looks for "
        "changed and linked variables (off by default in Kishu)",
    )
    args = parser.parse_args()

    import kishu

    with tempfile.TemporaryDirectory(prefix="kishu-compare-") as tmp:
        root = Path(tmp)
        notebook = root / "state.ipynb"
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(c) for c in (CELL_BUILD.format(scale=args.scale), CELL_CHANGE)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, notebook)
        if args.experimental_tracker:
            (root / ".kishu").mkdir()
            (root / ".kishu" / "config.ini").write_text("[IDGRAPH]\nexperimental_tracker = True\n")
        env = dict(os.environ)
        # Kishu keeps its config under $KISHU_PATH_ROOT/.kishu (default: home) and its database beside the notebook.
        env["KISHU_PATH_ROOT"] = str(root)
        # No browser is attached: Kishu's test mode skips what needs one (saving the notebook through the frontend,
        # which otherwise waits up to ~1.5 s per save for the file to change, and reloading the page). Commit ids
        # become counters. Checkpoint and checkout work is the same.
        env["ENV_KISHU_TEST_MODE"] = "1"
        # Kishu reads the kernel id from the connection file's name, as Jupyter servers write it: kernel-<id>.json.
        kernel_id = str(uuid.uuid4())
        km = jupyter_client.KernelManager(kernel_name="python3", connection_file=str(root / f"kernel-{kernel_id}.json"))
        km.start_kernel(env=env, cwd=str(root), kernel_id=kernel_id)
        kernel = Kernel(km)
        try:
            print(
                f"kishu {kishu.__version__}, python {sys.version.split()[0]}, kernel {km.kernel_id}, "
                f"machine: {os.cpu_count()} cores, Kishu tracker: "
                f"{'experimental' if args.experimental_tracker else 'default'}",
                flush=True,
            )
            _, text = kernel.run(SETUP.format(bench_dir=str(HERE), notebook=str(notebook)), silent=True)
            if text.strip():
                print("init_kishu printed:", text.strip()[:2000])
            commits: dict[str, str | None] = {}
            notes: list[str] = []

            def cell(name: str, code: str) -> float:
                wall, text = kernel.run(code)
                commits[name] = kernel.eval(KISHU_HEAD)
                if "Error in callback" in text or "Traceback" in text:
                    notes.append(f"{name}: Kishu hook error:\n{text.strip()[:3000]}")
                    print(f"{name}: Kishu hook error:\n{text.strip()[:3000]}", flush=True)
                print(f"{name}: round trip {wall:.2f} s, Kishu head {commits[name]}", flush=True)
                return wall

            cell("build", CELL_BUILD.format(scale=args.scale))
            state_names = kernel.eval('_kc["state_names"]')
            kernel.run(KH_SETUP.format(root=str(root / "cas")), silent=True)
            kernel.run(KH_FIRST, silent=True)
            print("kernelhop first capture done", flush=True)
            cell("change", CELL_CHANGE)
            kernel.run(KH_SECOND, silent=True)
            print("kernelhop second capture done", flush=True)
            cell("noop", CELL_NOOP)
            kernel.run(KISHU_CHECKOUT.format(key="co_incr", commit=commits["build"]), silent=True)
            print("Kishu checkout of commit 1 (from commit 2) done", flush=True)
            cell("delete", CELL_DELETE.format(names=", ".join(state_names)))
            kernel.run(KISHU_CHECKOUT.format(key="co_full", commit=commits["build"]), silent=True)
            print("Kishu checkout of commit 1 (state deleted) done", flush=True)
            kernel.run(KH_RESTORE, silent=True)
            print("kernelhop restore done", flush=True)
            r = kernel.results()
            entries = {
                name: kernel.eval(f"_kishu._kishu_commit.get_commit({cid!r}).checkpoint_runtime_s")
                for name, cid in commits.items()
            }
        finally:
            kernel.close()
        db = root / "state.kishudb"
        stored = stored_by_commit(db)
        db_mib = db.stat().st_size / MiB
        cas_mib = sum(p.stat().st_size for p in (root / "cas").rglob("*") if p.is_file()) / MiB

    # The cells Kishu timed, in order: build, change, noop, delete.
    hooks = {}
    for name, stamps in zip(["build", "change", "noop", "delete"], r["cells"], strict=True):
        pre = stamps["pre_b"] - stamps["pre_a"]
        post = stamps["post_b"] - stamps["post_a"]
        hooks[name] = (pre, post, stamps["post_a"] - stamps["pre_b"])

    def kishu_stored(name: str) -> tuple[float, list[str]]:
        return stored.get(commits[name] or "", (0.0, []))

    missing = sorted(set(state_names) - {n for _, names in stored.values() for v in names for n in v.split(",")})
    print()
    names = ", ".join(state_names)
    print(f"state: {r['state_mib']:.0f} MiB in {len(state_names)} variables ({names}), scale {args.scale}")
    print(f"init_kishu: {r['init_s']:.2f} s")
    for name in ("build", "change", "noop", "delete"):
        pre, post, body = hooks[name]
        print(
            f"Kishu cell '{name}': pre_run_cell {pre:.3f} s, post_run_cell {post:.3f} s "
            f"(of which checkpoint {entries[name] or 0:.3f} s), cell body {body:.3f} s, "
            f"stored {kishu_stored(name)[0]:.1f} MiB {sorted(kishu_stored(name)[1])}"
        )
    if missing:
        print(f"Kishu stored no snapshot of: {missing} (it skips variables that fail to pickle)")
    if r.get("kh_unpicklable"):
        print(f"kernelhop could not pickle: {r['kh_unpicklable']}")
    print(f"Kishu checkout 1 (from commit 2): {r['co_incr_msg']} ok={r['co_incr_ok']}")
    print(f"Kishu checkout 2 (state deleted): {r['co_full_msg']} ok={r['co_full_ok']}")
    print(f"kernelhop restore ok={r['kh_restore_ok']}")
    print(f"on disk: Kishu database {db_mib:.0f} MiB, kernelhop blob store {cas_mib:.0f} MiB")
    print()

    k_first = sum(hooks["build"][:2])
    k_change = sum(hooks["change"][:2])
    rows = [
        ("first checkpoint", r["kh_first_s"], k_first, r["kh_first_mib"], kishu_stored("build")[0]),
        ("checkpoint after 1 MiB change", r["kh_second_s"], k_change, r["kh_second_mib"], kishu_stored("change")[0]),
        ("restore / checkout, full state", r["kh_restore_s"], r["co_full_s"], None, None),
        ("checkout from commit 2 (Kishu incr.)", r["kh_restore_s"], r["co_incr_s"], None, None),
        ("per-cell cost, cell not touching state", 0.0, sum(hooks["noop"][:2]), 0.0, kishu_stored("noop")[0]),
    ]
    print(f"{'measure':40} {'kernelhop s':>12} {'Kishu s':>9} {'Kishu/kh':>9} {'kh MiB':>8} {'Kishu MiB':>10}")
    for name, ours, theirs, our_mib, their_mib in rows:
        ratio = f"{theirs / ours:8.1f}x" if ours > 0 else f"{'n/a':>9}"
        mib = f"{our_mib:8.1f} {their_mib:10.1f}" if our_mib is not None else f"{'':8} {'':10}"
        print(f"{name:40} {ours:12.3f} {theirs:9.3f} {ratio} {mib}")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
