"""`elite-ros`: segment recordings, evaluate them, inspect bags, and a one-command demo (no ROS needed).

    elite-ros segment IN [OUT] [--visualization] [--filtered] [--keep-other-topics] [--topic T]
    elite-ros evaluate IN [--report DIR] [--gt-field F] [--stored-predictions FIELD]
    elite-ros info IN
    elite-ros demo
    elite-ros benchmark IN [--repeat N]

IN is a ROS 1 bag, a rosbag2 folder (sqlite3 or mcap) or a SemanticKITTI/KITTI sequence folder.
Parameters come from config/segment.param.yaml (the node's file) unless --params-file / -p say otherwise.
One subcommand per module (elite_ros.commands.*: ``add_parser(subparsers)`` and ``run(args) -> int``); bad
input follows `elite_ros.command`: one line ``error: ...``, exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from elite_ros import __version__
from elite_ros.command import abort_on_signals, run_command
from elite_ros.cpu_threads import prepare_openmp

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "elite_ros.commands.segment",
    "elite_ros.commands.evaluate",
    "elite_ros.commands.info",
    "elite_ros.commands.demo",
    "elite_ros.commands.benchmark",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elite-ros", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"elite_ros {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the subcommand; bad input: one line ``error: ...`` and SystemExit(2); SIGTERM or
    Ctrl-C: a clean stop (partial outputs removed), one line and SystemExit(128 + signal)."""
    prepare_openmp()  # before the subcommands load torch: the node's CPU threading (elite_ros.cpu_threads)
    args = build_parser().parse_args(argv)
    with abort_on_signals():
        return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
