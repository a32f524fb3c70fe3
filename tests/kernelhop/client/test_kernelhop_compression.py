"""zstd on the kernel's uplink: used where it pays, skipped where it cannot, never on loopback unless asked."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import zstandard

from kernelhop.client.compression import MIN_SIZE, compress_if_it_pays, compression_wanted

FIXTURES = Path(__file__).resolve().parents[3] / "kernel-snapshot" / "fixtures"


def test_compressible_chunks_shrink_and_decode_to_the_same_bytes() -> None:
    chunk = np.arange(65536, dtype=np.int32).tobytes()  # small integers: mostly zero bytes
    frame = compress_if_it_pays(chunk)
    assert frame is not None and len(frame) <= 0.9 * len(chunk)
    assert zstandard.ZstdDecompressor().decompress(frame) == chunk


def test_incompressible_and_tiny_chunks_go_raw() -> None:
    assert compress_if_it_pays(os.urandom(256 * 1024)) is None
    assert compress_if_it_pays(np.random.default_rng(0).random(32768).tobytes()) is None  # random float64
    assert compress_if_it_pays(bytes(MIN_SIZE - 1)) is None


def test_the_shared_fixture_frame_is_what_python_decodes() -> None:
    fx = json.loads((FIXTURES / "zstd-blob.json").read_text())
    raw = bytes(i % 251 for i in range(fx["input_len"]))
    assert zstandard.ZstdDecompressor().decompress(base64.b64decode(fx["zstd_base64"])) == raw


def test_compression_is_off_on_loopback_and_on_across_a_network_unless_set() -> None:
    assert not compression_wanted("ws://127.0.0.1:8731/ws/v1", {})
    assert not compression_wanted("ws://localhost:8731/ws/v1", {})
    assert not compression_wanted("ws://[::1]:8731/ws/v1", {})
    assert compression_wanted("wss://gateway.example.org/ws/v1", {})
    assert compression_wanted("ws://10.1.2.3:8731/ws/v1", {})
    assert compression_wanted("ws://127.0.0.1:8731/ws/v1", {"KERNELHOP_COMPRESS": "on"})
    assert not compression_wanted("ws://10.1.2.3:8731/ws/v1", {"KERNELHOP_COMPRESS": "off"})
