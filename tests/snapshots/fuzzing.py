"""Shared by the fuzz tests: Hypothesis settings bounded for the test command, and byte mutations of valid inputs.

KERNELHOP_FUZZ_SECONDS (set by benchmarks/fuzz.py) makes each property run again and again for that long."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SECONDS = float(os.environ.get("KERNELHOP_FUZZ_SECONDS", "0"))
BOUNDED = settings(
    max_examples=1000 if SECONDS > 0 else 200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """`valid` with a few bytes flipped, inserted, dropped, or the rest cut off."""

    def apply(edits: list[tuple[str, int, bytes]]) -> bytes:
        b = bytearray(valid)
        for kind, at, data in edits:
            at %= len(b) + 1
            if kind == "flip" and b:
                b[at % len(b)] = data[0] if data else 0
            elif kind == "insert":
                b[at:at] = data
            elif kind == "drop":
                del b[at : at + 1 + len(data)]
            elif kind == "cut":
                del b[at:]
        return bytes(b)

    edit = st.tuples(st.sampled_from(["flip", "insert", "drop", "cut"]), st.integers(0, 1 << 20), st.binary(max_size=8))
    return st.lists(edit, min_size=1, max_size=4).map(apply)


def run_property(prop: Callable[[], None]) -> None:
    """Runs a @given property once (its bounded examples), or, under KERNELHOP_FUZZ_SECONDS, until that time is up."""
    prop()
    end = time.monotonic() + SECONDS
    while time.monotonic() < end:
        prop()
