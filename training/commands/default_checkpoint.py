"""`elite-ros-train default-checkpoint`: reproduce the shipped default checkpoint in one command."""
from __future__ import annotations

import argparse
from pathlib import Path

from elite_ros.command import add_progress_flag

CONFIG = "default_checkpoint"  # training/configs/default_checkpoint.yaml


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "default-checkpoint", help="reproduce the shipped default checkpoint (synthetic data only)",
        description="Render the synthetic drives that training/configs/default_checkpoint.yaml names, train the "
                    "student on them alone (no KITTI data), and export the best validation checkpoint as float16 "
                    "safetensors with its metadata, its output biases corrected to SemanticKITTI's class mix. "
                    "Deterministic by the config's seeds (up to float rounding).")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT.safetensors", help="checkpoint to write")
    parser.add_argument("--out-dir", type=Path, default=Path("runs"),
                        help="where the drives, logs and training checkpoints go (default ./runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (changes what is reproduced)")
    add_progress_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from elite_ros_training.config import load_config, named_config
    from elite_ros_training.export import export_student
    from elite_ros_training.fit import fit

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
    config = load_config(named_config(CONFIG), [f"trainer.out_dir={args.out_dir}", *args.set])
    result = fit(config, accelerator="cpu", progress=not args.no_progress)
    source = result.best_checkpoint or result.last_checkpoint
    export_student(source, args.out, half=True)
    miou = "n/a" if result.best_miou is None else f"{result.best_miou * 100:.1f} %"
    shifted = "" if config.data.target_class_counts is None else ", before the label-shift correction of its biases"
    print(f"wrote {args.out} from {source} (synthetic validation mIoU {miou}{shifted})")
    return 0
