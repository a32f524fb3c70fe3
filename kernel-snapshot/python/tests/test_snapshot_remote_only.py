"""What a runtime made from a module this process lacks comes home as RemoteOnly placeholders, raises a clear error
when touched, and goes back to the runtime unchanged."""

import sys

import pytest
from kernelhop_snapshot import Capturer, MemoryBlobStore, RemoteOnly, RemoteOnlyError, diff

MODULE = "kh_remote_only_mod"


@pytest.fixture
def remote_module(tmp_path, monkeypatch):
    """A module importable only while `available` is on (the runtime's side), as a GPU-only package would be."""
    (tmp_path / f"{MODULE}.py").write_text(
        "class Thing:\n    def __init__(self, value):\n        self.value = value\n"
    )

    class Switch:
        def on(self):
            monkeypatch.syspath_prepend(str(tmp_path))
            return __import__(MODULE)

        def off(self):
            sys.modules.pop(MODULE, None)
            sys.path.remove(str(tmp_path))

    yield Switch()
    sys.modules.pop(MODULE, None)


def test_a_group_this_side_cannot_unpickle_becomes_placeholders_and_goes_back_unchanged(remote_module):
    store = MemoryBlobStore()
    mod = remote_module.on()
    shared = mod.Thing(41)
    runtime_side = {"thing": shared, "alias": shared, "plain": [1, 2]}
    made = Capturer(store).capture(runtime_side)
    remote_module.off()

    kernel = Capturer(store)
    with pytest.raises(Exception, match=MODULE):  # without the flag, one bad group fails the whole restore
        kernel.restore(made.manifest)
    ns = kernel.restore(made.manifest, keep_unrestorable="runtime")
    assert ns["plain"] == [1, 2]
    assert isinstance(ns["thing"], RemoteOnly) and isinstance(ns["alias"], RemoteOnly)
    with pytest.raises(RemoteOnlyError, match=rf"'thing' \({MODULE}.Thing\) lives on the runtime only.*{MODULE}"):
        _ = ns["thing"].value
    assert "on the runtime only" in repr(ns["alias"])

    ns["plain"].append(3)
    again = kernel.capture(ns)
    changes = diff(made.manifest, again.manifest)
    assert changes.changed_names == ["plain"]  # the remote group went back exactly as it came
    assert again.manifest.unpicklable == {}

    remote_module.on()
    back = Capturer(store).restore(again.manifest)
    assert back["thing"].value == 41 and back["thing"] is back["alias"]
    assert back["plain"] == [1, 2, 3]


def test_rebinding_one_name_of_a_remote_group_says_what_the_others_lost(remote_module):
    store = MemoryBlobStore()
    mod = remote_module.on()
    shared = mod.Thing(1)
    made = Capturer(store).capture({"thing": shared, "alias": shared})
    remote_module.off()
    kernel = Capturer(store)
    ns = kernel.restore(made.manifest, keep_unrestorable="runtime")
    ns["alias"] = "rebound here"
    cap = kernel.capture(ns)
    assert list(cap.manifest.unpicklable) == ["thing"]
    assert "together with alias" in cap.manifest.unpicklable["thing"]["reason"]
    assert kernel.remote_groups() == []
