"""The Jupyter server extension behind the JupyterLab extension (server.py)."""
