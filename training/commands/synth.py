"""`elite-ros-train synth`: render a synthetic drive into a SemanticKITTI sequence folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from elite_ros.command import UsageError, add_progress_flag
from elite_ros_training.synthetic.sequence import generate_sequence


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `synth` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "synth",
        help="render a synthetic KITTI-like drive (HDL-64E scans, labels, camera images)",
        description="Render a procedural street drive as a SemanticKITTI sequence folder: velodyne/*.bin, "
                    "labels/*.label (with instance ids), image_2/*.png, calib.txt, poses.txt, times.txt. "
                    "Deterministic by seed; written atomically; refuses a non-empty OUT.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="sequence folder to create (must not exist or be empty)")
    parser.add_argument("--frames", type=int, default=100, help="number of frames at 10 Hz (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="world and noise seed (default: 0)")
    parser.add_argument("--every", type=int, default=1, metavar="K",
                        help="keep every K-th frame of the 10 Hz drive: FRAMES frames spread over a longer, more "
                             "varied drive (default 1)")
    parser.add_argument("--dense-labels", action="store_true",
                        help="also write the camera's per-pixel classes as pseudo-label maps (image_2_labels/, the "
                             "SAM-PLG format): dense 2D labels for the teacher")
    add_progress_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Render the drive into OUT (an existing non-empty OUT is refused: FileExistsError)."""
    if args.frames < 1:
        raise UsageError(f"--frames must be >= 1, got {args.frames}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.every < 1:
        raise UsageError(f"--every must be >= 1, got {args.every}")
    out = generate_sequence(args.out, args.frames, args.seed, progress=not args.no_progress, every=args.every,
                            dense_labels=args.dense_labels)
    print(f"wrote {args.frames} frames to {out}")
    return 0
