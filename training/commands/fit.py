"""`elite-ros-train fit`: train the student (with its camera teacher, as the config says)."""
from __future__ import annotations

import argparse
from pathlib import Path

from elite_ros.command import add_progress_flag


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fit", help="train the student (PPMSKD with a SAM teacher, or the student alone)",
        description="Train from a YAML config (a shipped name such as base, row_a .. row_l, or a path). Logs "
                    "(TensorBoard, metrics.csv) and checkpoints (best val mIoU, last) go to "
                    "<trainer.out_dir>/<trainer.name>/version_N/. Several processes: --devices N (per node) "
                    "and --num-nodes M; under torchrun or SLURM Lightning reads their environment.")
    parser.add_argument("--config", required=True, help="config name (base, row_a .. row_l, cpu_*) or YAML path")
    parser.add_argument("--data", nargs="+", metavar="BAG_OR_DIR", help="training data (replaces data.train)")
    parser.add_argument("--val-data", nargs="+", metavar="BAG_OR_DIR", help="validation data (replaces data.val)")
    parser.add_argument("--teacher-checkpoint", metavar="SAM_PTH|LIDAR", help="SAM checkpoint for the teacher "
                        "(e.g. sam_vit_b_01ec64.pth; replaces teacher.checkpoint), or for a U2MKD config the "
                        "LiDAR-only .safetensors teacher (replaces lidar_teacher.checkpoint)")
    parser.add_argument("--devices", type=int, default=1,
                        help="processes (GPUs, or CPU processes) per node (default 1)")
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes (default 1)")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto",
                        help="auto: GPUs when there are any (default)")
    parser.add_argument("--resume", metavar="last|PATH", help="continue a run: 'last' = the newest last.ckpt of "
                        "the config's run name, or a checkpoint path")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set trainer.max_epochs=2 --set optim.lr=0.1 (repeatable)")
    add_progress_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from elite_ros_training.config import apply_overrides, config_from_mapping, named_config, read_config_mapping
    from elite_ros_training.fit import fit

    for name in ("devices", "num_nodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    overrides = list(args.set)
    values = apply_overrides(read_config_mapping(named_config(args.config)), overrides)
    data = values.setdefault("data", {})
    if args.data:
        data["train"] = [str(Path(p)) for p in args.data]
    if args.val_data:
        data["val"] = [str(Path(p)) for p in args.val_data]
    if args.teacher_checkpoint:
        if values.get("lidar_teacher") is not None:  # U2MKD: a LiDAR-only runtime checkpoint
            values["lidar_teacher"]["checkpoint"] = args.teacher_checkpoint
        elif values.get("teacher") is None:
            raise ValueError(f"--teacher-checkpoint given, but config {args.config!r} has no teacher")
        else:
            values["teacher"]["checkpoint"] = args.teacher_checkpoint
    config = config_from_mapping(values)
    if not config.data.train and config.data.synthetic is None:
        raise ValueError("no training data: pass --data BAG_OR_DIR (or set data.train or data.synthetic in the "
                         "config)")
    result = fit(config, accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
                 resume=args.resume, progress=not args.no_progress)
    print(f"logs: {result.log_dir}")
    print(f"last checkpoint: {result.last_checkpoint} (step {result.global_step})")
    if result.best_checkpoint is not None:
        miou = "n/a" if result.best_miou is None else f"{result.best_miou * 100:.1f} %"
        print(f"best checkpoint: {result.best_checkpoint} (val mIoU {miou})")
    print(f"export it: elite-ros-train export {result.best_checkpoint or result.last_checkpoint} student.safetensors")
    return 0
