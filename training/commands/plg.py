"""`elite-ros-train plg`: SAM-PLG dense pseudo labels for the camera images of sequences or a bag."""
from __future__ import annotations

import argparse
from pathlib import Path

from elite_ros.command import UsageError, add_progress_flag
from elite_ros_training.data.bag_dataset import PSEUDO_LABEL_SUFFIX
from elite_ros_training.plg import (
    BOX_NMS_THRESH,
    DEFAULT_MODEL_TYPE,
    POINTS_PER_BATCH,
    STABILITY_SCORE_THRESH,
    PlgConfig,
    load_sam,
    run_plg,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``elite-ros-train plg``."""
    parser = subparsers.add_parser(
        "plg", help="SAM-PLG: dense pseudo labels from projected LiDAR labels and SAM",
        description="Writes a (2, H, W) uint16 (semantic, instance) map per frame, compressed, to "
                    f"<sequence>/image_2_labels/<id>.npz (or <bag>{PSEUDO_LABEL_SUFFIX}/<id>.npz). "
                    "Frames already done are skipped.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", type=Path, nargs="+", metavar="DIR",
                        help="SemanticKITTI sequence folder(s) (velodyne/, labels/, image_2/, calib.txt)")
    source.add_argument("--bag", type=Path, metavar="PATH", help="training rosbag (clouds with 'label', images)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help=f"with --bag: where maps go (default <bag>{PSEUDO_LABEL_SUFFIX})")
    parser.add_argument("--checkpoint", type=Path, required=True, help="SAM checkpoint, e.g. sam_vit_h_4b8939.pth")
    parser.add_argument("--model-type", default=DEFAULT_MODEL_TYPE, choices=["vit_h", "vit_l", "vit_b", "default"],
                        help="segment_anything.sam_model_registry key (the ELiTe paper: vit_h)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--points-per-batch", type=int, default=POINTS_PER_BATCH)
    parser.add_argument("--stability-score-thresh", type=float, default=STABILITY_SCORE_THRESH)
    parser.add_argument("--box-nms-thresh", type=float, default=BOX_NMS_THRESH)
    add_progress_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Pseudo labels for every frame of the given sequences or bag; prints the counts per source."""
    from elite_ros_training.data.bag_dataset import BagFrames, bag_pseudo_label_dir
    from elite_ros_training.data.semantickitti import SequenceFolder, pseudo_label_path

    if not args.checkpoint.is_file():
        raise UsageError(f"SAM checkpoint not found: {args.checkpoint}")
    config = PlgConfig(points_per_batch=args.points_per_batch, stability_score_thresh=args.stability_score_thresh,
                       box_nms_thresh=args.box_nms_thresh)
    jobs = []
    if args.sequence:
        if args.output_dir is not None:
            raise UsageError("--output-dir applies to --bag; sequence maps go to <sequence>/image_2_labels")
        for root in args.sequence:
            folder = SequenceFolder(root, load_pseudo_labels=False)
            if not folder.has_labels or not folder.has_images:
                raise UsageError(f"{root}: SAM-PLG needs labels/ and image_2/ for every scan")
            jobs.append((folder, lambda frame_id, root=root: pseudo_label_path(root, frame_id)))
    else:
        out = args.output_dir or bag_pseudo_label_dir(args.bag)
        jobs.append((BagFrames(args.bag), lambda frame_id: out / f"{frame_id}.npz"))
    sam = load_sam(args.model_type, args.checkpoint, args.device)
    for source, output_path in jobs:
        counts = run_plg(source, output_path, sam, config, progress=not args.no_progress)
        print(f"{getattr(source, 'root', getattr(source, 'path', ''))}: {counts['written']} written, "
              f"{counts['skipped']} skipped")
    return 0
