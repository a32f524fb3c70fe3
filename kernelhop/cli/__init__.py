"""The `kernelhop` command (main.py), the Node services it starts (services.py) and its gateway subcommands."""
