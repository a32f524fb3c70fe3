"""An IPython shell whose outputs are events: displays, the last expression's result and
tracebacks go to the event channel the way ipykernel sends them to a frontend."""

from __future__ import annotations

import builtins
import getpass
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import StdinNotImplementedError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Any as AnyTrait
from traitlets import Type

from .channel import EventChannel


class EventDisplayPublisher(DisplayPublisher):
    """`display(...)` and inline figures → `display` events with the MIME bundle."""

    channel = AnyTrait()

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs) -> None:  # type: ignore[override]
        self.channel.emit("display", data=data, metadata=metadata or {})


class EventDisplayHook(DisplayHook):
    """The last expression of a cell → one `result` event with the formatted MIME bundle."""

    channel = AnyTrait()

    def write_output_prompt(self) -> None:
        # A frontend shows the prompt number itself; nothing goes to stdout.
        pass

    def write_format_data(self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None) -> None:
        self.channel.emit("result", data=format_dict, metadata=md_dict or {})

    def finish_displayhook(self) -> None:
        # The base class writes a separator line to stdout; the result event is complete already.
        self.channel.flush()


def _no_stdin(prompt: object = "", *args: object, **kwargs: object) -> str:
    # As ipykernel without stdin: the same exception type, so code that handles a frontend without input works too.
    raise StdinNotImplementedError(
        "input() and getpass() cannot ask the notebook from a %%gpu cell: the cell runs on a GPU runtime. "
        "Set the value in a local cell first (it travels with the state), then use it here."
    )


class WorkerShell(InteractiveShell):
    displayhook_class = Type(EventDisplayHook)
    display_pub_class = Type(EventDisplayPublisher)

    # `!cmd` output must reach sys.stdout (our channel), not the worker's fd 1, as in ipykernel.
    system = InteractiveShell.system_piped

    def __init__(self, channel: EventChannel, **kwargs: Any) -> None:
        self._channel = channel
        super().__init__(**kwargs)
        self.displayhook.channel = channel
        self.display_pub.channel = channel
        builtins.input = _no_stdin
        getpass.getpass = _no_stdin

    def _showtraceback(self, etype, evalue, stb) -> None:  # type: ignore[override]
        # As ipykernel: the traceback is a side-channel event with IPython's formatted lines.
        # etype ("module:qualname") lets the kernel raise the exception as its own class (kernelhop/client/hop.py).
        self._channel.emit(
            "error",
            ename=getattr(etype, "__name__", str(etype)),
            evalue=str(evalue),
            traceback=list(stb),
            etype=f"{getattr(etype, '__module__', '')}:{getattr(etype, '__qualname__', '')}",
        )

    def init_virtualenv(self) -> None:
        # The worker runs in the interpreter the runtime chose; no virtualenv detection or warning.
        pass
