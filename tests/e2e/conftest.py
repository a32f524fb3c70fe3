"""Fixtures: a real gateway and runtime (posing as h100) on loopback, and real ipykernels that talk to them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kernelhop_testing import Kernel, Stack, launch_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = launch_stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.stop()


@pytest.fixture
def kernel(stack: Stack) -> Iterator[Kernel]:
    k = Kernel(stack.env())
    yield k
    k.shutdown()


@pytest.fixture
def make_kernel() -> Iterator[Callable[[dict[str, str]], Kernel]]:
    made: list[Kernel] = []

    def make(env: dict[str, str]) -> Kernel:
        k = Kernel(env)
        made.append(k)
        return k

    yield make
    for k in made:
        k.shutdown()
