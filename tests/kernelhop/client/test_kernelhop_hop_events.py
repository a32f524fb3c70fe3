"""The hop engine reports to whatever presenter it is given and shows nothing itself (client/hop_events.py)."""

import pytest
from IPython.core.interactiveshell import InteractiveShell

from kernelhop.client.gateway import GatewayError
from kernelhop.client.hop import Hopper


class Recorder:
    """A presenter that keeps what it is told, in order."""

    def __init__(self, gpu_class, quiet):
        self.gpu_class, self.quiet = gpu_class, quiet
        self.seen = []

    def __getattr__(self, name):
        if name not in ("phase", "progress", "tick", "waiting", "queued", "started", "remote_progress", "output",
                        "warn", "finished", "failed"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.seen.append((name, args, kwargs))

    def names(self):
        return [name for name, _, _ in self.seen if name not in ("tick", "progress")]


@pytest.fixture
def hopper(gateway_env):
    ip = InteractiveShell.instance()
    ip.reset(new_session=False)
    made = []

    def present(gpu_class, quiet):
        made.append(Recorder(gpu_class, quiet))
        return made[-1]

    h = Hopper(ip, present)
    h.made = made
    yield h
    h.close()
    ip.reset(new_session=False)


def test_a_hop_is_told_to_its_presenter_in_order(hopper, capsys):
    hopper.shell.run_cell("x = 20")
    hopper.hop("h100", "y = x + 1\nprint('from the gpu')", quiet=True)
    assert hopper.shell.user_ns["y"] == 21
    shown = hopper.made[-1]
    assert (shown.gpu_class, shown.quiet) == ("h100", True)
    names = shown.names()
    assert names[:2] == ["phase", "phase"] and names[-2:] == ["phase", "finished"]
    assert [args[0] for name, args, _ in shown.seen if name == "phase"] == ["upload", "queued", "home"]
    assert "started" in names
    outputs = [args[0] for name, args, _ in shown.seen if name == "output"]
    assert {(o["event"], o["name"]) for o in outputs} == {("stream", "stdout")}
    assert "".join(o["text"] for o in outputs) == "from the gpu\n"
    timings, status = next(args for name, args, _ in shown.seen if name == "finished")
    assert status == "ok" and timings["total_s"] >= timings["capture_s"]
    # The engine wrote nothing into the cell itself: that is the presenter's job.
    assert capsys.readouterr() == ("", "")


def test_a_failed_hop_tells_its_presenter_why(hopper):
    with pytest.raises(GatewayError) as raised:
        hopper.hop("no-such-class", "y = 1", quiet=False)
    shown = hopper.made[-1]
    assert shown.names()[-1] == "failed"
    assert shown.seen[-1][1][0] is raised.value
    assert "y" not in hopper.shell.user_ns
