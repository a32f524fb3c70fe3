"""Shared by the snapshot tests: a real gateway process, users on it, and real kernels with %snapshot loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kernelhop_snapshot import MemoryBlobStore
from kernelhop_testing import Kernel

from kernelhop.cli.services import Service, start_gateway
from kernelhop.client.gateway import GatewayConnection
from kernelhop.client.snapshots import Snapshots
from kernelhop.signing import Keyring


@dataclass
class Gateway:
    service: Service
    token: str
    data: Path

    @property
    def url(self) -> str:
        return self.service.ready["ws"]

    def api(self, token: str | None = None, home: Path | None = None) -> Snapshots:
        return Snapshots(
            GatewayConnection(self.url, token or self.token), MemoryBlobStore(), Keyring(home) if home else None
        )


@dataclass
class User:
    name: str
    token: str
    home: Path
    gateway: Gateway

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "KERNELHOP_GATEWAY": self.gateway.url,
            "KERNELHOP_TOKEN": self.token,
            "KERNELHOP_HOME": str(self.home),
            **extra,
        }

    def api(self) -> Snapshots:
        return self.gateway.api(self.token, self.home)


def launch_gateway(data: Path, token: str) -> Gateway:
    return Gateway(start_gateway(data=data, token=token, port=0, grpc_port=0, echo=None), token, data)


class SnapKernel(Kernel):
    """A real ipykernel with kernelhop and %snapshot loaded."""

    def __init__(self, env: dict[str, str]):
        super().__init__(env)
        loaded = self.run("%load_ext kernelhop.magics.snapshot")
        assert loaded.status == "ok", loaded.error_text

    def ok(self, code: str) -> str:
        ex = self.run(code)
        assert ex.status == "ok", ex.error_text + ex.stream_text()
        return ex.stream_text()

    def fails(self, code: str) -> str:
        ex = self.run(code)
        assert ex.status == "error", ex.stream_text()
        return ex.error_text + ex.stream_text()
