"""JupyterLab for the browser tests (Galata's settings: no token, no XSRF check, a temporary root).

tests/fixtures.ts starts one per Playwright worker and gives it the port on the command line.
"""

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # noqa: F821 (`c` is the config object Jupyter hands to config files)
