"""`elite-ros-train` subcommands, one module each (see training/cli.py)."""
