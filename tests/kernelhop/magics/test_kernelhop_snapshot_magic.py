"""`%snapshot`'s command line (magic_arguments, one parser per command): what it refuses, before any gateway."""

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from kernelhop.magics import snapshot


@pytest.fixture
def ip():
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    snapshot.load_ipython_extension(shell)
    yield shell
    snapshot.unload_ipython_extension(shell)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "no command; use one of save, list, restore, fork, diff, log, share, revoke, auto"),
        ("bogus x", "unknown command 'bogus'; use one of save, list"),
        ("restore\t", "%snapshot restore: the following arguments are required: REF"),
        ("restore", r"%snapshot restore: the following arguments are required: REF\nusage: %snapshot restore \["),
        ("diff only-one", "%snapshot diff: the following arguments are required: B"),
        ("save a b", "%snapshot save: unrecognized arguments: b"),
        ("auto maybe", "%snapshot auto: argument state: invalid choice: 'maybe'"),
        ("log -n many", "%snapshot log: argument -n: invalid int value: 'many'"),
        ("share x", "give one of --with USER or --link"),
        ("share x --with bob --link", "give one of --with USER or --link"),
        ("log", "this kernel has no snapshot yet; give REF or save one first"),
    ],
)
def test_usage_errors_name_the_command(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("snapshot", line)


def test_help_of_one_command(ip):
    with pytest.raises(UsageError) as e:
        ip.run_line_magic("snapshot", "fork -h")
    text = str(e.value)
    assert "%snapshot fork [--trust] [--name NAME] [--here] REF" in text
    assert "restore the fork into this kernel" in text


def test_magic_help_lists_every_command(ip):
    doc = ip.find_line_magic("snapshot").__doc__
    for command in snapshot.COMMANDS:
        assert f"%snapshot {command}" in doc
