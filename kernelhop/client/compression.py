"""zstd for chunks on the kernel's uplink, where it pays.

A kernel's link to the gateway (a laptop's, a cheap VM's) is where bytes cost most, and notebook state is often
compressible (zeros, small integers, text). Each chunk is sent zstd-compressed when that saves at least a tenth of it;
a sample tells incompressible bytes (random floats, already-compressed data) cheaply, so they cost one small trial.
The digest always covers the raw bytes, and the gateway stores them raw (ARCHITECTURE.md, the ws protocol).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import zstandard

CODEC = "zstd"
# Level 1 compresses at several hundred MB/s a core: slower levels would cost more time than a fast link saves.
LEVEL = 1
# Chunks below this are not worth a frame header and a trial.
MIN_SIZE = 4 * 1024
# Bytes of a chunk tried first; a sample that does not shrink says the rest will not either.
SAMPLE = 64 * 1024
# Compressed output must be at most this share of the raw bytes to be sent instead of them.
WORTH = 0.9


def compress_if_it_pays(data: bytes | bytearray | memoryview) -> bytes | None:
    """The zstd frame of `data` when it saves at least a tenth, else None (send the raw bytes)."""
    view = memoryview(data).cast("B")
    if view.nbytes < MIN_SIZE:
        return None
    compressor = zstandard.ZstdCompressor(level=LEVEL)
    if view.nbytes > 2 * SAMPLE and len(compressor.compress(view[:SAMPLE])) > WORTH * SAMPLE:
        return None
    frame = compressor.compress(view)
    return frame if len(frame) <= WORTH * view.nbytes else None


def compression_wanted(url: str, environ: Mapping[str, str] = os.environ) -> bool:
    """KERNELHOP_COMPRESS: "on", "off", or "auto" (the default): on, except to a gateway on this machine, where the
    bytes never cross a network and compressing would only spend CPU."""
    setting = environ.get("KERNELHOP_COMPRESS", "auto").strip().lower()
    if setting in ("on", "1", "true", "yes"):
        return True
    if setting in ("off", "0", "false", "no"):
        return False
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: assume a network in between
