"""`elite-ros-train validate`: score a training checkpoint with the runtime's own evaluation."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from elite_ros.command import add_progress_flag


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "validate",
        help="per-class IoU / mIoU of a checkpoint on labelled data (the same report as elite-ros evaluate)",
        description="Export the student of CHECKPOINT (a training .ckpt, or a runtime .safetensors) as `export` "
                    "does (label-shift correction included) and run "
                    "`elite-ros evaluate` on every input: the report (report.md, metrics.json, figures) is "
                    "exactly that command's. With several inputs each gets its own report folder.")
    parser.add_argument("--checkpoint", required=True, type=Path, help="training .ckpt or runtime .safetensors")
    parser.add_argument("--data", required=True, nargs="+", metavar="BAG_OR_DIR", help="labelled inputs")
    parser.add_argument("--report", type=Path, help="report folder (several inputs: one sub-folder each; "
                        "default ./report_<input name>)")
    parser.add_argument("--tta-votes", type=int, default=1, help="test-time augmentation votes (1 = off; the "
                        "paper's test protocol uses 12)")
    parser.add_argument("--no-label-shift", action="store_true",
                        help="score a training .ckpt without its config's label-shift correction "
                             "(data.target_class_counts): the network as trained, as its val/mIoU was measured")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace existing report folders")
    add_progress_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from elite_ros.cli import build_parser
    from elite_ros_training.export import export_student

    if args.tta_votes < 1:
        raise ValueError(f"--tta-votes must be >= 1, got {args.tta_votes}")
    with tempfile.TemporaryDirectory(prefix="elite_ros_validate_") as scratch:
        weights = args.checkpoint
        if weights.suffix != ".safetensors":
            weights = export_student(args.checkpoint, Path(scratch) / "student.safetensors",
                                     label_shift=not args.no_label_shift)
        status = 0
        for data in args.data:
            command = ["evaluate", str(data), "--checkpoint", str(weights), "-p", f"tta_votes={args.tta_votes}"]
            if args.report:
                report = args.report / Path(data).name if len(args.data) > 1 else args.report
                command += ["--report", str(report)]
            command += ["--device", args.device] if args.device else []
            command += ["--overwrite"] * args.overwrite + ["--no-progress"] * args.no_progress
            evaluate = build_parser().parse_args(command)  # `elite-ros evaluate`, errors left to our caller
            status = max(status, int(evaluate.func(evaluate) or 0))
    return status
