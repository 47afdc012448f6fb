"""`elite-ros-train`: the training command. One subcommand per module.

Each module listed in SUBCOMMAND_MODULES exposes ``add_parser(subparsers)``, which adds its subcommand
and sets ``func`` (``args -> exit code``) as the parser default. Add a subcommand by writing such a
module and listing it here.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "elite_ros_training.commands.synth",  # synth
    "elite_ros_training.plg",  # plg
    "elite_ros_training.data.convert",  # convert
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
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
