"""Load, reduced (issue 13; the full 50 kernels x 20 hops is benchmarks/load.py): real kernels hopping at once
against one gateway and runtime lose no hop, and neither service's memory grows past warm-up beyond a bound."""

from __future__ import annotations

from pathlib import Path

from kernelhop_load import MIB, run_load


def test_kernels_hopping_at_once_lose_no_hop_and_memory_stays_flat(tmp_path: Path) -> None:
    result = run_load(tmp_path, kernels=6, hops=8, capacity=2, sample_every_s=0.2)
    assert result.lost == []
    assert result.ok == 6 * 8
    assert len(result.samples) >= 8, "too short a run to say anything of memory"
    for which in ("gateway", "runtime"):
        warm, end = result.growth(which)
        # A short run: a looser bound than the benchmark's, still far below what a leak of each hop's state makes.
        assert result.flat(which, bound_mib=48, bound_share=0.25), f"{which} RSS {warm / MIB:.0f} -> {end / MIB:.0f} MiB"
