"""Drive `python -m kernelhop_worker` through its pipes, as the runtime does.

A module of its own (not conftest) so the tests can import it by a name no other test folder uses.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from kernelhop_proto import offer, to_json


class WorkerUnderTest:
    def __init__(
        self, cache: str, env: dict[str, str] | None = None, *, hello: dict[str, Any] | None | bool = True
    ) -> None:
        """`hello`: True sends the runtime's offer (the schema's defaults) after `ready`, a dict those fields
        instead, False nothing (a test of what comes before the hello)."""
        # Blobs the worker writes land in `out`; after each run they move into `cache`, as the runtime takes them.
        self._cache = cache
        self._out = cache.rstrip("/") + "-out"
        os.makedirs(self._out, exist_ok=True)
        read_fd, write_fd = os.pipe()
        # The worker expects its event pipe on fd 3 exactly.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kernelhop_worker", "--given", cache, "--out", self._out],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(3, write_fd),
            preexec_fn=lambda: os.dup2(write_fd, 3),
            env={**os.environ, **(env or {})},
        )
        os.close(write_fd)
        self._events = os.fdopen(read_fd, "rb", buffering=0)
        # Lines already read off the pipe: a buffered reader would hide them from the selector, and a wait for the
        # next event would time out while it sat in the buffer.
        self._pending = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._events, selectors.EVENT_READ)
        self.ready = self.next_event(timeout=60)
        assert self.ready["event"] == "ready", self.ready
        if hello:
            self.send({"op": "hello", **(to_json(offer([])) if hello is True else hello)})
            self.hello = self.next_event()
            assert self.hello["event"] == "hello", self.hello

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def next_event(self, timeout: float = 30, *, restored: bool = False) -> dict[str, Any]:
        """The next event; `restored` (the runtime's cue to start a spare) is skipped unless asked for."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" not in self._pending:
                if not self._selector.select(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"no worker event within {timeout} s")
                data = self._events.read(1 << 16)
                if not data:
                    raise EOFError("the worker closed its event pipe")
                self._pending += data
            line, self._pending = self._pending.split(b"\n", 1)
            event = json.loads(line)
            if event["event"] == "done":
                self._take_blobs()
            if restored or event["event"] != "restored":
                return event

    def _take_blobs(self) -> None:
        for name in os.listdir(self._out):
            source = os.path.join(self._out, name)
            if os.path.isfile(source):
                os.makedirs(os.path.join(self._cache, name[:2]), exist_ok=True)
                os.replace(source, os.path.join(self._cache, name[:2], name))

    def run(
        self, code: str, snapshot: str, run_id: str = "r1", timeout: float = 60, reach: list[str] | None = None
    ) -> list[dict[str, Any]]:
        self.send({"op": "run", "run_id": run_id, "code": code, "snapshot": snapshot, "reach": reach})
        return list(self.events_until_final(timeout))

    def events_until_final(self, timeout: float = 60, *, restored: bool = False) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()), restored=restored)
            yield event
            if event["event"] in ("done", "failed"):
                return

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._events.close()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
