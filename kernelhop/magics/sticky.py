"""`%gpu CLASS`: every following cell of the notebook runs on CLASS, as if it began with `%%gpu CLASS`, until
`%gpu off`. Each is an ordinary hop: the session's worker stays warm on its runtime between cells, so only what
changed moves, and what a cell changed comes home after it; `%gpu off` then goes on here with the state."""

from __future__ import annotations

from typing import Any


class StickyGpu:
    """The sticky class of one kernel, and the input transformer that prefixes each cell with `%%gpu CLASS ...`."""

    def __init__(self, shell: Any):
        self.shell = shell
        self.gpu_class: str | None = None
        self.options = ""
        shell.input_transformers_cleanup.append(self.transform)

    def on(self, gpu_class: str, options: str) -> None:
        self.gpu_class, self.options = gpu_class, options.strip()

    def off(self) -> str | None:
        was, self.gpu_class, self.options = self.gpu_class, None, ""
        return was

    def transform(self, lines: list[str]) -> list[str]:
        if self.gpu_class is None:
            return lines
        first = next((line.strip() for line in lines if line.strip()), "")
        # Blank cells stay blank; `%gpu ...` (off, usage, another class) and explicit `%%gpu` cells mean what they say.
        if first == "" or first.startswith(("%gpu", "%%gpu")):
            return lines
        header = f"%%gpu {self.gpu_class} {self.options}".rstrip()
        return [header + "\n", *lines]

    def close(self) -> None:
        if self.transform in self.shell.input_transformers_cleanup:
            self.shell.input_transformers_cleanup.remove(self.transform)
