"""`elite-ros-train convert SRC OUT`: a KITTI / SemanticKITTI folder or a kitti2bag bag -> a training rosbag2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elite_ros.command import UsageError, add_progress_flag
from elite_ros_training.data import convert as conversion
from elite_ros_training.data.bag_dataset import CAMERA_INFO_TOPIC, CLOUD_TOPIC, IMAGE_TOPIC, TF_STATIC_TOPIC


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `convert` on an `elite-ros-train` sub-command parser."""
    doc = conversion.__doc__ or ""
    parser = subparsers.add_parser(
        "convert", help="KITTI / SemanticKITTI folder or kitti2bag bag -> rosbag2 (mcap) for training",
        description="Convert a KITTI odometry / SemanticKITTI sequence folder (or KITTI object folder), or a bag "
                    "recorded by kitti2bag (ROS 1 or rosbag2), into a rosbag2 for training. Refuses an existing OUT; "
                    "writes atomically.",
        epilog=doc[doc.index("Output layout"):], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", type=Path, help="sequence folder (velodyne/, labels/, image_2/, calib.txt, "
                        "times.txt) or a ROS 1 / rosbag2 bag made by kitti2bag")
    parser.add_argument("out", type=Path, help="output rosbag2 folder (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default mcap)")
    parser.add_argument("--start-time", type=float, default=0.0,
                        help="folder input: stamp of times.txt's zero, seconds since the epoch (default 0)")
    parser.add_argument("--max-frames", type=int, default=None, help="convert only the first N frames")
    parser.add_argument("--cloud-topic", default=CLOUD_TOPIC, help=f"PointCloud2 topic (default {CLOUD_TOPIC})")
    parser.add_argument("--image-topic", default=IMAGE_TOPIC, help=f"Image topic (default {IMAGE_TOPIC})")
    parser.add_argument("--camera-info-topic", default=CAMERA_INFO_TOPIC,
                        help=f"CameraInfo topic (default {CAMERA_INFO_TOPIC})")
    parser.add_argument("--tf-topic", default=TF_STATIC_TOPIC, help=f"static TF topic (default {TF_STATIC_TOPIC})")
    add_progress_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `convert` from parsed arguments; prints notes and a summary to stderr."""
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    topics = conversion.Topics(args.cloud_topic, args.image_topic, args.camera_info_topic, args.tf_topic)
    report = conversion.convert(args.src, args.out, topics=topics, storage=args.storage, max_frames=args.max_frames,
                                progress=not args.no_progress, start_time_ns=int(round(args.start_time * 1e9)))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {report.output}: {report.frames} clouds ({report.labelled} labelled), {report.images} images",
          file=sys.stderr)
    return 0
