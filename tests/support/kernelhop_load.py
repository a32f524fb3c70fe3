"""The load run (issue 13): many real kernels, each running many `%%gpu` hops at once against one gateway and one
runtime on loopback, while the gateway's and the runtime's resident memory is sampled. Shared by
benchmarks/load.py (the full size) and tests/e2e/test_load.py (a reduced one)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from kernelhop_testing import Kernel, Stack, launch_stack

# Samples before this share of all hops is done are warm-up (caches, JIT, pools filling): not part of the trend.
WARM_UP = 0.25
MIB = 1 << 20


@dataclass
class Sample:
    at_s: float
    hops_done: int
    gateway_rss: int
    runtime_rss: int


@dataclass
class LoadResult:
    kernels: int
    hops: int
    ok: int
    lost: list[str]
    seconds: float
    samples: list[Sample] = field(default_factory=list)

    def growth(self, which: str) -> tuple[int, int]:
        """(RSS after warm-up, RSS at the end) of `which`, each the median of a quarter of the samples: the
        warm-up's end (the second quarter of the hops) and the run's end (the last quarter)."""
        total = self.kernels * self.hops
        rss = [(s.hops_done, getattr(s, f"{which}_rss")) for s in self.samples]
        early = [r for done, r in rss if WARM_UP * total <= done < 0.5 * total] or [rss[0][1]]
        late = [r for done, r in rss if done >= 0.75 * total] or [rss[-1][1]]
        return int(statistics.median(early)), int(statistics.median(late))

    def flat(self, which: str, *, bound_mib: float, bound_share: float) -> bool:
        """No growth past warm-up beyond `bound_mib` MiB plus `bound_share` of the warm RSS."""
        warm, end = self.growth(which)
        return end - warm <= bound_mib * MIB + bound_share * warm


def cell(n: int) -> str:
    # Each hop reads and changes the state, so every hop moves a (small) delta out and home.
    return f"%%gpu h100\nstate['n'] += 1\nstate['last'] = [{n}] * 256\nassert state['n'] == {n + 1}, state['n']"


def run_load(
    root: Path,
    *,
    kernels: int,
    hops: int,
    capacity: int,
    sample_every_s: float = 0.5,
    say: Callable[[str], None] = lambda _: None,
) -> LoadResult:
    """`kernels` kernels, started together, each running `hops` hops one after the other; a hop is lost when it
    fails or its change does not come home (each kernel's counter must end at `hops`)."""
    stack = launch_stack(root, capacity=capacity)
    made: list[Kernel] = []
    try:
        return _run(stack, made, kernels, hops, sample_every_s, say)
    finally:
        for k in made:
            k.shutdown()
        stack.stop()


def _run(
    stack: Stack, made: list[Kernel], kernels: int, hops: int, every_s: float, say: Callable[[str], None]
) -> LoadResult:
    # One after the other: jupyter_client picks a kernel's ports before the kernel binds them, so kernels started
    # at once can pick the same port.
    for _ in range(kernels):
        made.append(Kernel(stack.env()))
    assert len(made) == kernels, f"only {len(made)} of {kernels} kernels started"
    for k in made:
        assert k.run("state = {'n': 0, 'payload': bytes(range(256)) * 4096}").status == "ok"
    say(f"{kernels} kernels up")
    done = 0
    lost: list[str] = []
    lock = threading.Lock()
    procs = {
        "gateway": psutil.Process(stack.gateway.process.pid),
        "runtime": psutil.Process(stack.runtime.process.pid),
    }
    samples: list[Sample] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while True:
            samples.append(
                Sample(time.monotonic() - t0, done, procs["gateway"].memory_info().rss, procs["runtime"].memory_info().rss)
            )
            if stop.wait(every_s):
                return

    def drive(i: int, k: Kernel) -> None:
        nonlocal done
        for n in range(hops):
            try:
                execution = k.run(cell(n), timeout=600)
                failed = None if execution.status == "ok" else execution.error_text[-300:]
            except Exception as e:  # a hop that never answered is as lost as one that failed
                failed = f"{type(e).__name__}: {e}"
            with lock:
                done += 1
                if failed is not None:
                    lost.append(f"kernel {i} hop {n}: {failed}")
                if done % max(1, (kernels * hops) // 20) == 0 and samples:
                    last = samples[-1]
                    say(
                        f"{done} hops, {len(lost)} lost, {time.monotonic() - t0:.0f} s; RSS gateway "
                        f"{last.gateway_rss / MIB:.1f} MiB, runtime {last.runtime_rss / MIB:.1f} MiB"
                    )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    drivers = [threading.Thread(target=drive, args=(i, k)) for i, k in enumerate(made)]
    for t in drivers:
        t.start()
    for t in drivers:
        t.join()
    seconds = time.monotonic() - t0
    stop.set()
    sampler.join()
    for i, k in enumerate(made):
        counted = k.value("state['n']")
        if counted != str(hops):
            lost.append(f"kernel {i}: state['n'] is {counted} after {hops} hops")
    ok = kernels * hops - sum(1 for line in lost if " hop " in line)
    return LoadResult(kernels, hops, ok, lost, seconds, samples)
