"""Fuzzing the Python parsers of bytes from outside: manifests, tree blobs, the worker's command lines.

Whatever they are given, they return a value or raise their own error (ManifestError, TreeError, ValueError for a
command line); never a RecursionError, KeyError, TypeError or a hang."""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from fuzzing import BOUNDED, json_values, mutated, run_property
from hypothesis import given
from hypothesis import strategies as st
from kernelhop_snapshot import Capturer, Manifest, ManifestError, MemoryBlobStore
from kernelhop_snapshot.tree import TreeError, parse_tree_blob
from kernelhop_worker.worker import parse_command_line

FIXTURES = Path(__file__).parents[2] / "kernel-snapshot" / "fixtures"
DEEP = b"[" * 100_000 + b"]" * 100_000


def _valid_manifest() -> bytes:
    store = MemoryBlobStore()
    return store.get(Capturer(store).capture({"x": [1, 2, 3], "s": "é"}).digest)


def _valid_tree() -> bytes:
    fixture = json.loads((FIXTURES / "files-tree.json").read_text())
    return base64.b64decode(fixture["blobs"][fixture["tree_blobs"][0]])


def _replaced(valid: object) -> st.SearchStrategy[object]:
    """`valid` with one value inside it replaced by an arbitrary JSON value."""

    def apply(args: tuple[int, object]) -> object:
        pick, replacement = args
        copy = json.loads(json.dumps(valid))
        slots: list[tuple[dict | list, object]] = []

        def visit(v: object) -> None:
            items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
            for k, child in list(items):
                slots.append((v, k))  # type: ignore[arg-type]
                visit(child)

        visit(copy)
        if not slots:
            return replacement
        holder, key = slots[pick % len(slots)]
        holder[key] = replacement  # type: ignore[index]
        return copy

    return st.tuples(st.integers(0, 1 << 16), json_values).map(apply)


def _encoded(value: object) -> bytes:
    return json.dumps(value).encode()


MANIFEST = _valid_manifest()
TREE = _valid_tree()


def test_fuzz_manifest_from_bytes_raises_only_manifest_error():
    Manifest.from_bytes(MANIFEST)

    @BOUNDED
    @given(st.binary(max_size=512) | mutated(MANIFEST) | _replaced(json.loads(MANIFEST)).map(_encoded))
    def prop(data: bytes) -> None:
        try:
            Manifest.from_bytes(data)
        except ManifestError:
            pass

    run_property(prop)


def test_fuzz_tree_blob_raises_only_tree_error():
    parse_tree_blob(TREE, "seed")

    @BOUNDED
    @given(st.binary(max_size=512) | mutated(TREE) | _replaced(json.loads(TREE)).map(_encoded))
    def prop(data: bytes) -> None:
        try:
            parse_tree_blob(data, "fuzzed")
        except TreeError:
            pass

    run_property(prop)


def test_fuzz_worker_command_line_raises_only_value_error():
    valid = b'{"op":"run","run_id":"r1","code":"x = 1","snapshot":"' + b"0" * 64 + b'/0","reach":null}\n'
    assert parse_command_line(valid)["op"] == "run"

    @BOUNDED
    @given(st.binary(max_size=512) | mutated(valid))
    def prop(line: bytes) -> None:
        try:
            assert isinstance(parse_command_line(line), dict)
        except ValueError:
            pass

    run_property(prop)


@pytest.mark.parametrize(
    "parse, error",
    [
        (Manifest.from_bytes, ManifestError),
        (lambda b: parse_tree_blob(b, "deep"), TreeError),
        (parse_command_line, ValueError),
    ],
    ids=["manifest", "tree", "worker-command"],
)
def test_deeply_nested_json_is_refused_with_the_parsers_own_error(parse, error):
    # Found by the fuzzer: json.loads raised RecursionError, which escaped every parser (and killed the worker's
    # command thread, leaving it deaf to the runtime).
    with pytest.raises(error):
        parse(DEEP)


def test_a_real_worker_answers_commands_after_a_deeply_nested_line(tmp_path):
    # Before the fix the RecursionError ended the thread reading commands: the worker never answered again.
    events_r, events_w = os.pipe()
    worker = subprocess.Popen(
        [sys.executable, "-m", "kernelhop_worker", "--given", str(tmp_path), "--out", str(tmp_path)],
        stdin=subprocess.PIPE,
        close_fds=False,  # the event pipe becomes fd 3, where the runtime puts it
        env={**os.environ, "KERNELHOP_PRELOAD": ""},
        preexec_fn=lambda: os.dup2(events_w, 3),
    )
    os.close(events_w)
    events = os.fdopen(events_r, "rb", buffering=0)  # unbuffered, so select() sees every line not yet read
    try:
        assert json.loads(events.readline())["event"] == "ready"
        assert worker.stdin is not None
        worker.stdin.write(DEEP + b"\n" + b'{"op": "frobnicate"}\n')
        worker.stdin.flush()
        ready = select.select([events], [], [], 30)[0]
        assert ready, "the worker did not answer the deeply nested line"
        first = json.loads(events.readline())
        assert (first["event"], first["code"]) == ("failed", "bad_command")
        assert "nests too deeply" in first["message"]
        assert select.select([events], [], [], 30)[0], "the worker stopped reading commands"
        second = json.loads(events.readline())
        assert second["code"] == "bad_command" and "unknown op" in second["message"]
    finally:
        worker.kill()
        worker.wait()
        events.close()
