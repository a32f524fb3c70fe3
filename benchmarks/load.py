"""Load (issue 13): K real kernels x H `%%gpu` hops each, all at once, against one gateway and one runtime on
loopback. Reports hops lost (failed, or a change that did not come home) and the gateway's and the runtime's
resident memory: after warm-up (the median over the second quarter of the hops) against the end (the median over
the last quarter), the ratio being the growth; flat is a growth under 16 MiB + 10 %.

    .venv/bin/python benchmarks/load.py [--kernels 50] [--hops 20] [--capacity 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from kernelhop_load import MIB, run_load

BOUND_MIB, BOUND_SHARE = 16, 0.10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", type=int, default=50)
    ap.add_argument("--hops", type=int, default=20)
    ap.add_argument("--capacity", type=int, default=4, help="the runtime's slots (workers at once)")
    ap.add_argument("--json", type=Path, help="write every sample here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kernelhop-load-") as root:
        result = run_load(
            Path(root), kernels=args.kernels, hops=args.hops, capacity=args.capacity, say=lambda s: print(s, flush=True)
        )
    total = args.kernels * args.hops
    print(f"\n{args.kernels} kernels x {args.hops} hops = {total} hops in {result.seconds:.1f} s "
          f"({total / result.seconds:.1f} hops/s); lost {total - result.ok}")
    for line in result.lost[:10]:
        print("  lost:", line)
    flat = True
    for which in ("gateway", "runtime"):
        warm, end = result.growth(which)
        ok = result.flat(which, bound_mib=BOUND_MIB, bound_share=BOUND_SHARE)
        flat &= ok
        peak = max(getattr(s, f"{which}_rss") for s in result.samples)
        print(f"{which}: RSS after warm-up {warm / MIB:.1f} MiB, at the end {end / MIB:.1f} MiB "
              f"(x{end / warm:.3f}), peak {peak / MIB:.1f} MiB: {'flat' if ok else 'GROWING'}")
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in result.samples]))
    return 0 if flat and not result.lost else 1


if __name__ == "__main__":
    sys.exit(main())
