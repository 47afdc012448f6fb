"""What the `elite-ros` subcommands that run the network share: the node's parameters and the handler built
from them, the run's context for reports, and the printed result."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from elite_ros import __version__, strict_yaml
from elite_ros.evaluate import Evaluation
from elite_ros.handler import SegmentationHandler
from elite_ros.params import ParameterError, SegmentParams, load_params_file
from elite_ros.report import KITTI_ATTRIBUTION, SEMANTICKITTI_ATTRIBUTION

if TYPE_CHECKING:
    from elite_ros.recording import CameraTopics, Recording

UNTRAINED_NOTE = ("The checkpoint's weights are UNTRAINED (random initialisation): the labels and IoU values "
                  "are meaningless; they only show that the pipeline runs end to end.")
UNTRAINED_FIGURE_NOTE = "UNTRAINED weights: labels meaningless"


def add_params_options(parser: argparse.ArgumentParser) -> None:
    """--params-file, -p NAME=VALUE, --checkpoint, --device: the node's parameters on the command line."""
    group = parser.add_argument_group("parameters (as the node's; see config/segment.param.yaml)")
    group.add_argument("--params-file", help="ROS 2 params file (default: the shipped config/segment.param.yaml)")
    group.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                       help="override one parameter, e.g. -p tta_votes=3 -p 'filtered_classes=[road]' (repeatable)")
    group.add_argument("--checkpoint", help="student checkpoint .safetensors (default: the bundled one)")
    group.add_argument("--device", help="auto | cpu | cuda | cuda:N")


def params_from_args(args: argparse.Namespace) -> SegmentParams:
    """The params file with the command line's overrides applied (ParameterError names a bad one)."""
    params = load_params_file(args.params_file)
    overrides: dict[str, Any] = {}
    for item in args.param or []:
        if "=" not in item:
            raise ParameterError(item, "expected NAME=VALUE")
        name, value = item.split("=", 1)
        try:
            overrides[name.strip()] = strict_yaml.load(value)
        except yaml.YAMLError as error:
            raise ParameterError(name.strip(), f"value {value!r} is not valid YAML: {strict_yaml.describe(error)[1]}"
                                 ) from None
    for name in ("checkpoint", "device"):
        if getattr(args, name, None):
            overrides[name] = getattr(args, name)
    return params.replace(**overrides) if overrides else params


def add_camera_flag(parser: argparse.ArgumentParser) -> None:
    """--no-camera: run a fusion checkpoint on its imputation path only (the fall-back without images)."""
    parser.add_argument("--no-camera", action="store_true",
                        help="fusion checkpoints: ignore the recording's camera (every frame on the imputation "
                             "path, as with a camera that fails); default: its images, CameraInfo and /tf_static")


def camera_for_run(args: argparse.Namespace, recording: Recording, handler: SegmentationHandler,
                   params: SegmentParams) -> CameraTopics | None:
    """The recording's camera for a fusion checkpoint (`recording.find_camera_topics`), None for a LiDAR-only one,
    with --no-camera or without images; says which on stderr."""
    from elite_ros.recording import find_camera_topics

    if not handler.uses_camera:
        return None
    topics = None if args.no_camera else find_camera_topics(recording, params.camera)
    if topics is None:
        why = "--no-camera" if args.no_camera else "the recording has no image topic"
        print(f"camera: none ({why}): every frame on the imputation path", file=sys.stderr)
    else:
        extrinsic = topics.tf or "camera.extrinsic"
        print(f"camera: {topics.image} + {topics.info}, LiDAR -> camera from {extrinsic}", file=sys.stderr)
    return topics


def load_handler(params: SegmentParams) -> SegmentationHandler:
    """The handler for `params`, with the untrained-weights warning and the precision note on stderr."""
    handler = SegmentationHandler.from_params(params)
    if not handler.trained:
        print(f"warning: {UNTRAINED_NOTE}", file=sys.stderr)
    hint = handler.precision_hint
    if hint:
        print(f"note: {hint}", file=sys.stderr)
    return handler


def open_run(args: argparse.Namespace) -> tuple[Recording, SegmentationHandler]:
    """The recording named by ``args.input`` and the handler of the command line's parameters."""
    from elite_ros.recording import Recording

    return Recording.open(args.input), load_handler(params_from_args(args))


def run_context(recording: Recording, handler: SegmentationHandler, params: SegmentParams) -> dict[str, Any]:
    """The settings of a run, as shown in its report."""
    segmenter = handler.segmenter
    return {
        "input": str(recording.path), "elite_ros": __version__,
        "checkpoint": params.checkpoint or "bundled default",
        "weights": "trained" if handler.trained else "UNTRAINED",
        "classes": f"{handler.classes.num_classes} (the checkpoint's, class 0 '{handler.classes.names[0]}' ignored)",
        "device": str(getattr(segmenter, "device", params.device)),
        "backend": str(getattr(segmenter, "backend", params.backend)),
        "precision": params.precision, "tta_votes": params.tta_votes, "max_points": params.max_points,
        "range_m": f"{params.min_range:g}..{params.max_range:g}",
    }


def attributions(recording: Recording, forced: bool = False) -> list[str]:
    """KITTI / SemanticKITTI credits when the data are KITTI-derived (a KITTI folder, 'kitti' in the path, or
    --attribute-kitti for converted bags whose name does not say so)."""
    return [KITTI_ATTRIBUTION, SEMANTICKITTI_ATTRIBUTION] if forced or recording.is_kitti else []


def print_result(evaluation: Evaluation, report: Path) -> None:
    """mIoU (or why there is none) and where the report is."""
    metrics = evaluation.metrics()
    if metrics["miou"] is not None:
        print(f"mIoU {metrics['miou'] * 100:.1f} % over {metrics['labelled_frames']} labelled frames "
              f"({evaluation.classes.num_classes - 1} classes)")
    elif evaluation.labelled_frames == 0:
        print("no ground truth found: latency only")
    print(f"report: {report / 'report.md'}")
