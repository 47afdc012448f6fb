"""What every subcommand of `elite-ros` and `elite-ros-train` shares: the error policy and the progress flag.

A subcommand module has ``add_parser(subparsers)``, which adds its subparser (with `add_progress_flag`
when it shows progress) and sets ``func=run``, and ``run(args) -> int`` (the exit code, 0 = success).

Error policy: bad input -- a `UsageError`, or one of `BAD_INPUT_ERRORS` (ValueError and its subclasses
such as ParameterError, ConfigError, CheckpointError, BagError; a missing input; an output that exists)
-- ends the command with ONE line ``error: <message>`` on stderr and exit code 2 (`EXIT_USAGE`, as
argparse uses for a malformed command line). `run_command` applies it; each program's ``main`` calls it.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2  # bad input, as argparse exits on a malformed command line
#: exceptions that mean the input (arguments, files, recordings, configs) is wrong, not the program
BAD_INPUT_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                                                 IsADirectoryError)
PROGRESS_FLAG = "--no-progress"


class UsageError(SystemExit):
    """Bad input to a subcommand: exits with EXIT_USAGE; ``str()`` is the one line ``error: <message>``."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = " ".join(str(message).split())  # one line

    def __str__(self) -> str:
        return f"error: {self.message}"


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed subcommand (``args.func(args)``) under the error policy.

    Returns its exit code; on bad input prints ``error: <message>`` to stderr and raises `UsageError`
    (a SystemExit with code 2).
    """
    try:
        return int(args.func(args) or 0)
    except UsageError as error:
        print(error, file=sys.stderr)
        raise
    except BAD_INPUT_ERRORS as error:
        usage = UsageError(str(error))
        print(usage, file=sys.stderr)
        raise usage from error


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """The one progress switch of every subcommand that shows a progress bar: ``--no-progress``."""
    parser.add_argument(PROGRESS_FLAG, action="store_true", help="hide the progress bar")
