"""The worker rebuilds unpicklable names from the kernel's recipes (manifest meta "recompute") before the cell."""

from __future__ import annotations

import hashlib
from typing import Any

from kernelhop_snapshot import Capturer, DirectoryBlobStore, Manifest, digest_of


def snapshot(cache: str, setup: str, recompute: dict[str, Any], unpicklable: dict[str, str] | None = None) -> str:
    """A kernel's capture of what ``setup`` makes, with ``recompute`` as its recipes; ``unpicklable`` names
    variables (with their types) the kernel could not pickle, though they would pickle here."""
    ns: dict[str, Any] = {}
    exec(setup, ns)
    ns.pop("__builtins__", None)
    for name in unpicklable or {}:
        ns.pop(name, None)
    store = DirectoryBlobStore(cache)
    captured = Capturer(store).capture(ns, meta={"recompute": recompute}).manifest
    live = {n: {"type": t, "reason": "it is live in the kernel"} for n, t in (unpicklable or {}).items()}
    manifest = Manifest(groups=captured.groups, unpicklable={**captured.unpicklable, **live}, meta=captured.meta)
    data = manifest.to_bytes()
    digest = digest_of(data)
    if not store.has(digest):
        store.put(digest, data)
    return str(digest)


def manifest_of(cache: str, digest: str) -> Manifest:
    with open(f"{cache}/{digest[:2]}/{digest.split('/')[0]}", "rb") as f:
        return Manifest.from_bytes(f.read())


def stdout(events) -> str:
    return "".join(e["text"] for e in events if e["event"] == "stream" and e["name"] == "stdout")


def stderr(events) -> str:
    return "".join(e["text"] for e in events if e["event"] == "stream" and e["name"] == "stderr")


def test_steps_run_once_in_order_and_change_only_the_rebuilt_names(worker, cache, tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("r1\nr2\nr3\n")
    setup = f"src = open({str(path)!r})\nrows = (r.strip() for r in src)\nhead = 'kernel value'"
    steps = [
        f"with open({str(path)!r}) as probe:\n    head = 'recipe value'\nsrc = open({str(path)!r})",
        "rows = (r.strip() for r in src)",
        "print('replayed output')\nfirst = next(rows)",
    ]
    # Both names need all three steps: run once each, `rows` is one row in, as in the kernel.
    digest = snapshot(cache, setup, {"steps": steps, "names": {"rows": [0, 1, 2], "src": [0, 1, 2]}})
    events = worker.run("print(next(rows), head, 'probe' in globals(), 'first' in globals())", digest)
    assert stdout(events) == "r2 kernel value False False\n", events
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "ok", events
    # The rebuilt objects stay here: the capture carries neither (so the kernel keeps its own), nor any recipe.
    captured = manifest_of(cache, done["snapshot"])
    assert not {"rows", "src"} & (set(captured.names()) | set(captured.unpicklable))
    assert "recompute" not in captured.meta


def test_a_replayed_hash_object_is_the_kernels(worker, cache):
    kernel = hashlib.sha256()
    kernel.update(b"a")
    kernel.update(b"b")
    recipe = {"steps": ["m = hashlib.sha256()", "m.update(b'a')"], "names": {"m": [0, 1]}}
    digest = snapshot(cache, "import hashlib\nm = hashlib.sha256()", recipe, {"m": "_hashlib.HASH"})
    events = worker.run("m.update(b'b')\nres = m.hexdigest()", digest)
    assert events[-1]["status"] == "ok", events
    worker_manifest = manifest_of(cache, events[-1]["snapshot"])
    assert "res" in worker_manifest.names()
    restored = Capturer(DirectoryBlobStore(cache)).restore(worker_manifest)
    assert restored["res"] == kernel.hexdigest()


def test_a_failing_step_leaves_placeholders_for_the_names_that_need_it(worker, cache):
    recipe = {
        "steps": ["lock = threading.Lock()\nraise OSError('no locks here')", "gen = (i for i in range(3))"],
        "names": {"lock": [0], "gen": [1], "both": [0, 1]},
    }
    setup = "import threading\nlock = threading.Lock()\ngen = (i for i in range(3))\nboth = threading.Lock()"
    digest = snapshot(cache, setup, recipe)
    events = worker.run("print(next(gen))\nlock.acquire()", digest)
    err = stderr(events)
    assert "variable 'lock' could not be rebuilt on the runtime: re-running `lock = threading.Lock()\n" in err
    assert "failed: OSError: no locks here" in err and "variable 'both' could not be rebuilt" in err
    assert stdout(events) == "0\n", events
    error = next(e for e in events if e["event"] == "error")
    assert error["ename"] == "UnavailableVariableError"
    assert "rebuilding it here: re-running `lock = threading.Lock()\nraise OSError" in error["evalue"]


def test_a_rebuilt_object_that_pickles_here_never_comes_home_unless_the_cell_rebinds_it(worker, cache):
    # A stand-in for a live widget: the kernel could not pickle its `w`; the one the recipe makes pickles here.
    recipe = {"steps": ["w = {'model_id': 'new'}", "v = {'model_id': 'new'}"], "names": {"w": [0], "v": [1]}}
    digest = snapshot(cache, "", recipe, {"w": "builtins.dict", "v": "builtins.dict"})
    events = worker.run("w['value'] = 5\nv = {'model_id': 'made by the cell'}", digest)
    assert events[-1]["status"] == "ok", events
    captured = manifest_of(cache, events[-1]["snapshot"])
    assert "w" not in captured.names() and "v" in captured.names()


def test_a_warm_workers_own_object_never_stands_for_the_kernels(worker, cache, snapshot_of):
    first = worker.run("import threading\nlock = threading.Lock()\nlock.acquire()", snapshot_of())
    assert first[-1]["status"] == "ok", first
    # The kernel has a lock of its own under that name, without a recipe: the runtime must not use the leftover.
    digest = snapshot(cache, "import threading\nlock = threading.Lock()", {})
    events = worker.run("lock.locked()", digest, run_id="r2")
    error = next(e for e in events if e["event"] == "error")
    assert error["ename"] == "UnavailableVariableError", events


def test_malformed_recipes_leave_placeholders(worker, cache):
    digest = snapshot(
        cache, "gen = (i for i in range(3))", {"steps": ["gen = iter([1])"], "names": {"gen": [0, 7]}}
    )
    events = worker.run("next(gen)", digest)
    error = next(e for e in events if e["event"] == "error")
    assert error["ename"] == "UnavailableVariableError", events
