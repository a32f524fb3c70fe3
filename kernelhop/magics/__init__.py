"""The IPython magics `%load_ext kernelhop` loads: `%%gpu` and `%gpu` (gpu.py), `%snapshot` (snapshot.py)."""
