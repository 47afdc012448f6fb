"""`elite-ros-train export`: a training checkpoint -> the student checkpoint the node loads."""
from __future__ import annotations

import argparse
from pathlib import Path

from elite_ros_training.commands.outputs import add_student_output, refuse_existing_output


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="write the trained student of a training checkpoint as a runtime .safetensors",
        description="Read a Lightning checkpoint of `fit` (weights only, nothing executed) and write the "
                    "student with its metadata (trained, classes, palette, learning map, voxel grid, "
                    "intensity scale, the training config, the data, val mIoU, source commit), atomically.")
    parser.add_argument("checkpoint", type=Path, metavar="CKPT", help="best-*.ckpt or last.ckpt of a fit run")
    add_student_output(parser)
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the file; the "
                        "runtime upcasts them)")
    parser.add_argument("--no-label-shift", action="store_true",
                        help="leave out the label-shift correction of the config's data.target_class_counts "
                             "(export the classifier as trained)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from elite_ros.checkpoint import read_metadata
    from elite_ros_training.export import export_student

    refuse_existing_output(args)
    out = export_student(args.checkpoint, args.out, half=args.half, label_shift=not args.no_label_shift)
    training = read_metadata(out).training
    miou = training.get("val_miou")
    print(f"wrote {out} (epoch {training.get('epoch')}, step {training.get('global_step')}, val mIoU "
          f"{'n/a' if miou is None else f'{miou * 100:.1f} %'})")
    return 0
