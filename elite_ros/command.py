"""What every subcommand of `elite-ros` and `elite-ros-train` shares: the error policy and the progress flag.

A subcommand module has ``add_parser(subparsers)``, which adds its subparser (with `add_progress_flag`
when it shows progress) and sets ``func=run``, and ``run(args) -> int`` (the exit code, 0 = success).

Error policy: bad input -- a `UsageError`, or one of `BAD_INPUT_ERRORS` (ValueError and its subclasses
such as ParameterError, ConfigError, CheckpointError, BagError; a missing input; an output that exists)
-- ends the command with ONE line ``error: <message>`` on stderr and exit code 2 (`EXIT_USAGE`, as
argparse uses for a malformed command line). `run_command` applies it; each program's ``main`` calls it.
Anything else is a bug and keeps its traceback.

Interruption: Ctrl-C (SIGINT), and SIGTERM inside `abort_on_signals`, stop a command like an exception:
``with`` blocks unwind, so atomic outputs (`elite_ros.atomic`) leave nothing half-written, and the command
ends with ONE line ``error: interrupted by SIGTERM ...`` and exit code 128 + the signal's number, as a shell
reports a process its signal ended.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_USAGE = 2  # bad input, as argparse exits on a malformed command line
EXIT_SIGNAL_BASE = 128  # a command stopped by signal N exits 128 + N (the shell's convention)
#: exceptions that mean the input (arguments, files, recordings, configs) is wrong, not the program
BAD_INPUT_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                                                 IsADirectoryError, PermissionError)
PROGRESS_FLAG = "--no-progress"
ABORT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """A signal of `ABORT_SIGNALS` arrived: raised where the program was, so it unwinds as after Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def abort_on_signals() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM and SIGINT raise `Interrupted`; once one has, both
    are ignored until the block has unwound, so the clean-up of partial outputs is not cut short. The
    previous handlers come back afterwards. Elsewhere than in the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in ABORT_SIGNALS}

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for other in ABORT_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise Interrupted(signum)

    for signum in ABORT_SIGNALS:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
    (a SystemExit with code 2); when interrupted (Ctrl-C, or a signal under `abort_on_signals`) prints one
    line and raises SystemExit(128 + the signal's number).
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
    except KeyboardInterrupt as error:
        signum = int(getattr(error, "signum", signal.SIGINT))
        print(f"error: interrupted by {signal.Signals(signum).name}: stopped, no unfinished output left",
              file=sys.stderr)
        raise SystemExit(EXIT_SIGNAL_BASE + signum) from None


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """The one progress switch of every subcommand that shows a progress bar: ``--no-progress``."""
    parser.add_argument(PROGRESS_FLAG, action="store_true", help="hide the progress bar")
