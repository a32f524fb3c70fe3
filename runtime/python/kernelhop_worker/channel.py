"""The one ordered event channel (fd 3) and the stdout/stderr writers that feed it.

Every event goes through one lock, and pending stream text is flushed before any other event, so
stdout, stderr, displays and results arrive in the order the cell produced them."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def _json_default(value: Any) -> Any:
    # Jupyter sends binary MIME data (image/png from some formatters) as base64 text.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return repr(value)


class EventChannel:
    """JSON lines on a file descriptor, written whole under one lock."""

    # Small text is held back this long so `print(a, b)` (several writes) becomes one event.
    FLUSH_INTERVAL_S = 0.05
    MAX_PENDING_CHARS = 64 * 1024

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.RLock()
        self._pending_name: str | None = None
        self._pending: list[str] = []
        self._pending_chars = 0
        self.run_id: str | None = None
        # The largest line the runtime takes, as the hello agreed (max_frame_bytes); None before the hello.
        self.max_line_bytes: int | None = None
        # While the main thread writes, an interrupt must wait: a half-written line would corrupt
        # the channel. The SIGINT handler reads `busy` and is re-raised through `on_idle`.
        self.busy = False
        self._main_depth = 0
        self.on_idle: Callable[[], None] | None = None
        self._flusher = threading.Thread(target=self._flush_loop, name="kernelhop-flush", daemon=True)
        self._flusher.start()

    def emit(self, event: str, **fields: Any) -> None:
        with self._critical():
            self._flush_pending()
            self._write(event, fields)

    def stream(self, name: str, text: str) -> None:
        if not text:
            return
        with self._critical():
            if self._pending_name is not None and self._pending_name != name:
                self._flush_pending()
            self._pending_name = name
            self._pending.append(text)
            self._pending_chars += len(text)
            if "\n" in text or self._pending_chars >= self.MAX_PENDING_CHARS:
                self._flush_pending()

    def flush(self) -> None:
        with self._critical():
            self._flush_pending()

    @contextlib.contextmanager
    def _critical(self) -> Iterator[None]:
        # Signals run in the main thread: only its own writes need shielding from KeyboardInterrupt.
        main = threading.current_thread() is threading.main_thread()
        with self._lock:
            if main:
                self._main_depth += 1
                self.busy = True
            try:
                yield
            finally:
                if main:
                    self._main_depth -= 1
                    self.busy = self._main_depth > 0
        if main and not self.busy and self.on_idle is not None:
            self.on_idle()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(self.FLUSH_INTERVAL_S)
            self.flush()

    def _flush_pending(self) -> None:
        if self._pending_name is None:
            return
        name, text = self._pending_name, "".join(self._pending)
        self._pending_name, self._pending, self._pending_chars = None, [], 0
        self._write("stream", {"name": name, "text": text})

    def _write(self, event: str, fields: dict[str, Any]) -> None:
        message: dict[str, Any] = {"event": event}
        if self.run_id is not None and event != "ready":
            message["run_id"] = self.run_id
        message.update(fields)
        line = (json.dumps(message, default=_json_default, ensure_ascii=False, separators=(",", ":")) + "\n").encode(
            "utf-8", "surrogateescape"
        )
        if self.max_line_bytes is not None and len(line) > self.max_line_bytes:
            self._write_over_limit(event, fields, len(line))
            return
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]


    def _write_over_limit(self, event: str, fields: dict[str, Any], size: int) -> None:
        """Obey the agreed line limit: long text goes in halves, anything else too big is left out, saying so."""
        text = fields.get("text") if event == "stream" else None
        if isinstance(text, str) and len(text) > 1:
            half = len(text) // 2
            self._write(event, {**fields, "text": text[:half]})
            self._write(event, {**fields, "text": text[half:]})
            return
        self._write(
            "stream",
            {
                "name": "stderr",
                "text": f"kernelhop worker: a {event} of {size} bytes was left out: the runtime takes lines of at "
                f"most {self.max_line_bytes} bytes (the pipes' agreed max_frame_bytes)\n",
            },
        )


class StreamWriter(io.TextIOBase):
    """sys.stdout / sys.stderr during a cell: text becomes `stream` events."""

    def __init__(self, channel: EventChannel, name: str) -> None:
        super().__init__()
        self._channel = channel
        self._name = name

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"<kernelhop {self._name}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._channel.stream(self._name, text)
        return len(text)

    def flush(self) -> None:
        self._channel.flush()
