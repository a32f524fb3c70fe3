"""A kernel's zstd-compressed upload through the real gateway: stored raw, served raw, digests of the raw bytes."""

from __future__ import annotations

import os

import numpy as np
from kernelhop_testing import Stack

from kernelhop.client.gateway import GatewayConnection, blob_digest


def test_compressed_and_raw_blobs_round_trip(stack: Stack) -> None:
    client = GatewayConnection(stack.ws_url, stack.token)
    client.compress = True  # loopback turns it off by default
    compressible = np.arange(300_000, dtype=np.int64).tobytes()
    random_bytes = os.urandom(200_000)
    blobs = {blob_digest(b): b for b in (compressible, random_bytes)}
    try:
        assert client.put_blobs(blobs) == len(compressible) + len(random_bytes)
        assert client.find_missing(list(blobs)) == []
        assert client.get_blobs(list(blobs)) == blobs
    finally:
        client.close()
