"""Fuzzing `kernelhop snapshot import`: a file that is truncated, bit-flipped or hand-made is refused with
TamperedSnapshot, never a KeyError, TypeError or ValueError of the parser; a real gateway takes what is valid."""

from __future__ import annotations

import json
import struct

import pytest
from fuzzing import BOUNDED, json_values, mutated, run_property
from hypothesis import given
from hypothesis import strategies as st
from kernelhop_snapshot import Capturer

from kernelhop.client.export import MAGIC, export_snapshot, import_snapshot
from kernelhop.client.hop_store import HopStore
from kernelhop.client.snapshots import TamperedSnapshot


def _file(header: object) -> bytes:
    data = json.dumps(header).encode()
    return MAGIC + struct.pack(">I", len(data)) + data


def test_fuzz_import_refuses_mangled_files_with_tampered_snapshot(users, tmp_path):
    api = users["alice"].api()
    api.store = HopStore()
    cap = Capturer(api.store).capture({"x": list(range(50)), "s": "é"})
    environment = {"python": "3.11.7", "packages": {}}
    sid = api.save(cap.manifest, cap.digest, parents=[], message="m", notebook=None, cells=[], environment=environment)
    valid = tmp_path / "valid.khsnap"
    export_snapshot(api, sid, valid)
    assert import_snapshot(api, valid) == sid
    seed = valid.read_bytes()
    header = json.loads(seed[12 : 12 + struct.unpack(">I", seed[8:12])[0]])
    target = tmp_path / "fuzzed.khsnap"
    # Found by the fuzzer: a signed header whose blobs are not a list escaped as KeyError and TypeError.
    for blobs in ({"a": 1}, 7):
        target.write_bytes(_file({**header, "blobs": blobs}))
        with pytest.raises(TamperedSnapshot):
            import_snapshot(api, target)

    @BOUNDED
    @given(
        mutated(seed)
        | st.builds(_file, json_values)
        | st.builds(lambda k, v: _file({**header, k: v}), st.sampled_from(sorted(header)), json_values)
    )
    def prop(data: bytes) -> None:
        target.write_bytes(data)
        try:
            assert import_snapshot(api, target) == sid  # only a mutation the format ignores gets through
        except TamperedSnapshot:
            pass

    run_property(prop)


@pytest.mark.parametrize(
    "header",
    [
        {"id": "x", "record": {"n": float("nan")}, "signature": "", "blobs": []},
        "deep",
    ],
    ids=["nan-record", "deep"],
)
def test_malformed_headers_are_refused_as_tampered(users, tmp_path, header):
    # Found by the fuzzer: these escaped as ValueError and RecursionError instead of a clear refusal.
    path = tmp_path / "bad.khsnap"
    if header == "deep":
        body = b"[" * 100_000 + b"]" * 100_000
        path.write_bytes(MAGIC + struct.pack(">I", len(body)) + body)
    else:
        path.write_bytes(_file(header))
    with pytest.raises(TamperedSnapshot):
        import_snapshot(users["alice"].api(), path)
