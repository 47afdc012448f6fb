"""`elite-ros` subcommands, one module each (see elite_ros/cli.py; the error policy is elite_ros/command.py)."""
