"""How an environment recorded elsewhere (a snapshot's, a hop's kernel) differs from this one (environment.py)."""

from importlib.metadata import version

from kernelhop.environment import differences


def test_a_local_version_label_is_a_rule_not_a_difference() -> None:
    numpy = version("numpy")
    # torch 2.3.0+cpu in the kernel and 2.3.0+cu121 on the GPU host are one release built for other devices.
    assert differences({"packages": {"numpy": f"{numpy}+cu121"}}) == []
    assert differences({"packages": {"numpy": "0.0.1"}}) == [("numpy", numpy, "0.0.1")]
    assert differences({"packages": {"no-such-dist-here": "1.0"}}) == [("no-such-dist-here", "not installed", "1.0")]
