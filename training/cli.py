"""`elite-ros-train`: the training command. One subcommand per module, under elite_ros_training.commands.

Each module listed in SUBCOMMAND_MODULES exposes ``add_parser(subparsers)``, which adds its subcommand
and sets ``func=run``, and ``run(args) -> int``; bad input follows `elite_ros.command` (one line
``error: ...``, exit code 2). Add a subcommand by writing such a module and listing it here.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from elite_ros.command import run_command

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "elite_ros_training.commands.synth",  # synth
    "elite_ros_training.commands.plg",  # plg
    "elite_ros_training.commands.convert",  # convert
    "elite_ros_training.commands.fit",  # fit
    "elite_ros_training.commands.validate",  # validate
    "elite_ros_training.commands.export",  # export
    "elite_ros_training.commands.default_checkpoint",  # default-checkpoint
    "elite_ros_training.commands.import_official",  # import-official
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elite-ros-train",
        description="ELiTe training tools: synthetic data, KITTI conversion, SAM pseudo labels.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the subcommand; bad input: one line ``error: ...`` and SystemExit(2)."""
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
