"""The kernel host of test_three_hosts.py: a real ipykernel driven by jupyter_client, both inside the kernel host's
network namespace (its ZMQ sockets are on that namespace's loopback, out of the test's reach).

Reads one JSON request a line from stdin, {"code": ..., "timeout": ...}, and answers each with one JSON line:
{"status": ..., "stdout": ..., "error": ...}.
"""

from __future__ import annotations

import json
import os
import sys

from kernelhop_testing import Kernel


def main() -> None:
    kernel = Kernel(dict(os.environ))
    print(json.dumps({"status": "ready"}), flush=True)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            run = kernel.run(request["code"], timeout=request.get("timeout", 300))
            answer = {"status": run.status, "stdout": run.stream_text("stdout"), "error": run.error_text}
            print(json.dumps(answer), flush=True)
    finally:
        kernel.shutdown()


if __name__ == "__main__":
    main()
