"""Fixtures shared by the client's tests."""

import pytest
from IPython.core.interactiveshell import InteractiveShell

from kernelhop.magics.gpu import GpuMagics


@pytest.fixture
def shell(gateway_env):
    """A real IPython shell with %%gpu against the fake gateway; a background hop left in flight is cancelled."""
    ip = InteractiveShell.instance()
    ip.reset(new_session=False)
    magics = GpuMagics(ip)
    ip.register_magics(magics)
    yield ip
    if magics.hopper.background is not None:
        magics.hopper.background.cancel()
    magics.close()
    ip.reset(new_session=False)
