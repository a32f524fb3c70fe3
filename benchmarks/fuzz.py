"""The parser fuzz properties of the test suite, each run for --seconds instead of a bounded number of examples.

Runs the fast-check properties (kernel-snapshot: manifests, tree blobs; gateway: records, zstd frames, gRPC messages,
a live gateway's ws frames and ops) and the Hypothesis ones (manifests, tree blobs, the worker's command lines, and
snapshot import against a real gateway), with KERNELHOP_FUZZ_SECONDS set; prints each suite's outcome and time.
A failure prints fast-check's or Hypothesis's shrunk counterexample: keep it as an explicit case with the fix.

    .venv/bin/python benchmarks/fuzz.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = {
    "kernel-snapshot (fast-check)": ["node", "--test", "kernel-snapshot/dist/test/fuzz.test.js"],
    "gateway (fast-check)": ["node", "--test", "gateway/dist/test/fuzz.test.js"],
    "python parsers (Hypothesis)": [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/snapshots/test_fuzz_parsers.py", "tests/snapshots/test_fuzz_export.py",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long each property runs (default 60)")
    args = parser.parse_args()
    subprocess.run(["npm", "run", "build", "--silent"], cwd=ROOT, check=True)
    env = {**os.environ, "KERNELHOP_FUZZ_SECONDS": str(args.seconds)}
    failed = False
    for name, command in SUITES.items():
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        took = time.monotonic() - started
        print(f"{name}: {'ok' if done.returncode == 0 else 'FAILED'} in {took:.0f} s", flush=True)
        if done.returncode != 0:
            failed = True
            print(done.stdout[-6000:], done.stderr[-3000:], sep="\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
