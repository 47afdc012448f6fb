"""`elite-ros segment IN [OUT]`: segment every PointCloud2 of a recording into a new rosbag2."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from elite_ros.command import add_progress_flag
from elite_ros.commands.options import add_camera_flag, add_params_options, camera_for_run, open_run, params_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("segment",
                              help="segment every PointCloud2 of a bag or KITTI folder into a new rosbag2")
    p.add_argument("input", help="ROS 1 bag, rosbag2 folder (sqlite3/mcap) or SemanticKITTI/KITTI sequence folder")
    p.add_argument("output", nargs="?", help="rosbag2 folder to write (must not exist; default: <input name>_segmented "
                                             "in the current folder, never inside the input's dataset)")
    p.add_argument("--topic", action="append", help="PointCloud2 topic to segment (repeatable; default: all)")
    p.add_argument("--visualization", action="store_true", help="also write <topic>/visualization (x, y, z, rgb)")
    p.add_argument("--filtered", action="store_true", help="also write <topic>/filtered (input minus filtered_classes)")
    p.add_argument("--keep-other-topics", action="store_true", help="copy every other topic into the output")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage (default mcap)")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    add_camera_flag(p)
    add_progress_flag(p)
    add_params_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Segment the recording; exit code 1 when no frame could be segmented."""
    from elite_ros.replay import default_output_path, replay

    recording, handler = open_run(args)
    outputs = ["segmentation"] + ["visualization"] * args.visualization + ["filtered"] * args.filtered
    output = Path(args.output) if args.output else default_output_path(args.input)
    camera = camera_for_run(args, recording, handler, params_from_args(args))
    summary = replay(recording, handler, output=output, topics=args.topic, outputs=outputs,
                     keep_other_topics=args.keep_other_topics, storage=args.storage, progress=not args.no_progress,
                     log=lambda line: print(line, file=sys.stderr), camera=camera)
    for source, targets in summary.topics.items():
        print(f"{source} -> {', '.join(targets)}")
    print(summary.text())
    if args.json:
        print(json.dumps(summary.to_dict()))
    return 0 if summary.frames or not summary.errors else 1
