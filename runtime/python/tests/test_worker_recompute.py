"""The worker rebuilds unpicklable names from the kernel's recipes (manifest meta "recompute") before the cell."""

from __future__ import annotations

import json
from typing import Any

from kernelhop_snapshot import Capturer, DirectoryBlobStore, Manifest


def snapshot(cache: str, setup: str, recompute: dict[str, Any]) -> str:
    ns: dict[str, Any] = {}
    exec(setup, ns)
    ns.pop("__builtins__", None)
    return str(Capturer(DirectoryBlobStore(cache)).capture(ns, meta={"recompute": recompute}).digest)


def stdout(events) -> str:
    return "".join(e["text"] for e in events if e["event"] == "stream" and e["name"] == "stdout")


def stderr(events) -> str:
    return "".join(e["text"] for e in events if e["event"] == "stream" and e["name"] == "stderr")


def test_recipes_run_needs_first_and_change_only_their_names(worker, cache, tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("r1\nr2\n")
    setup = (
        f"src = open({str(path)!r})\nrows = (r.strip() for r in src)\nhead = 'kernel value'\nodd = open({str(path)!r})"
    )
    digest = snapshot(
        cache,
        setup,
        {
            # Listed first, and named to sort first: the order comes from needs.
            "rows": {"code": "rows = (r.strip() for r in src)", "needs": ["src"]},
            "src": {
                "code": f"with open({str(path)!r}) as probe:\n    head = 'recipe value'\nsrc = open({str(path)!r})"
            },
            "odd": "not a recipe",
        },
    )
    events = worker.run("print(next(rows), head, 'probe' in globals())\nodd.read()", digest)
    assert stdout(events) == "r1 kernel value False\n", events
    error = next(e for e in events if e["event"] == "error")
    assert error["ename"] == "UnavailableVariableError" and "variable 'odd'" in error["evalue"]
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "error"
    with open(f"{cache}/{done['snapshot'][:2]}/{done['snapshot'].split('/')[0]}", "rb") as f:
        captured = Manifest.from_bytes(f.read())
    # Rebuilt objects cannot be pickled here either, so they stay unpicklable and never travel home (a placeholder
    # is not captured at all).
    assert set(captured.unpicklable) == {"rows", "src"} and "odd" not in captured.names()
    assert json.dumps(captured.meta).find("recompute") == -1


def test_a_failing_recipe_keeps_the_placeholder_and_says_why(worker, cache):
    digest = snapshot(
        cache,
        "import threading\nlock = threading.Lock()\ngen = (i for i in range(3))",
        {
            "lock": {"code": "lock = threading.Lock()\nraise OSError('no locks here')", "needs": []},
            "gen": {"code": "gen = (i for i in range(3))", "needs": ["lock"]},
        },
    )
    events = worker.run("lock.acquire()", digest)
    assert "variable 'lock' could not be rebuilt on the runtime: OSError: no locks here" in stderr(events)
    assert "variable 'gen' could not be rebuilt on the runtime: it needs 'lock', which could not be rebuilt" in (
        stderr(events)
    )
    error = next(e for e in events if e["event"] == "error")
    assert error["ename"] == "UnavailableVariableError"
    assert "re-running `lock = threading.Lock()\nraise OSError('no locks here')` failed: OSError" in error["evalue"]


def test_a_warm_workers_own_object_never_stands_for_the_kernels(worker, cache, snapshot_of):
    first = worker.run("import threading\nlock = threading.Lock()\nlock.acquire()", snapshot_of())
    assert first[-1]["status"] == "ok", first
    # The kernel has a lock of its own under that name, without a recipe: the runtime must not use the leftover.
    digest = snapshot(cache, "import threading\nlock = threading.Lock()", {})
    events = worker.run("lock.locked()", digest, run_id="r2")
    error = next(e for e in events if e["event"] == "error")
    assert error["ename"] == "UnavailableVariableError", events
