"""Fixtures: one real gateway process per module, users made through its admin ops, real kernels acting as them."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest
from snapshot_harness import Gateway, SnapKernel, User, launch_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = launch_gateway(tmp_path_factory.mktemp("gateway"), secrets.token_hex(16))
    yield g
    g.service.stop()


@pytest.fixture(scope="module")
def users(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> dict[str, User]:
    admin = gateway.api()
    out = {}
    for name in ("alice", "bob", "carol"):
        token = admin.request("user_add", name=name)["token"]
        out[name] = User(name, token, tmp_path_factory.mktemp(f"home-{name}"), gateway)
    return out


@pytest.fixture
def kernel() -> Iterator[Callable[[User], SnapKernel]]:
    made: list[SnapKernel] = []

    def make(user: User) -> SnapKernel:
        k = SnapKernel(user.env())
        made.append(k)
        return k

    yield make
    for k in made:
        k.shutdown()
