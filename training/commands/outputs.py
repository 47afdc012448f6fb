"""The student-checkpoint output that the converting subcommands (export, import-official) share."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_student_output(parser: argparse.ArgumentParser) -> None:
    """Positional ``OUT.safetensors`` (`args.out`) and ``--overwrite``."""
    parser.add_argument("out", type=Path, metavar="OUT.safetensors", help="student checkpoint to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def refuse_existing_output(args: argparse.Namespace) -> None:
    """FileExistsError (bad input: one ``error:`` line) when OUT exists and --overwrite was not given."""
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
