"""`elite-ros evaluate IN`: per-class IoU / mIoU and latency of a recording with ground truth; a report folder."""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from elite_ros.checkpoint import CheckpointError
from elite_ros.command import add_progress_flag
from elite_ros.commands.options import (
    UNTRAINED_FIGURE_NOTE,
    UNTRAINED_NOTE,
    add_camera_flag,
    add_params_options,
    attributions,
    camera_for_run,
    load_handler,
    params_from_args,
    print_result,
    run_context,
)
from elite_ros.evaluate import Evaluation
from elite_ros.ground_truth import CloudGroundTruth, ground_truth_ids, ground_truth_kind
from elite_ros.labels import SEMANTIC_KITTI, ClassTable
from elite_ros.params import ParameterError, SegmentParams
from elite_ros.report import write_report

if TYPE_CHECKING:
    from elite_ros.recording import Recording


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="per-class IoU / mIoU (SemanticKITTI protocol) and latency; "
                                               "writes a report folder")
    p.add_argument("input", help="bag or SemanticKITTI folder whose clouds carry ground truth")
    p.add_argument("--report", help="report folder to write (default: ./report_<input name>)")
    p.add_argument("--topic", action="append", help="PointCloud2 topic (repeatable; default: all)")
    p.add_argument("--gt-field", help="ground-truth field (default: first of label, gt_label, gt_class_id; never "
                   "class_id, this package's own output, unless named here)")
    p.add_argument("--gt-kind", choices=("auto", "raw", "train"), default="auto",
                   help="raw ids (through the model's learning map) or training ids (auto: label/gt_label raw, "
                        "else training ids)")
    p.add_argument("--stored-predictions", metavar="FIELD",
                   help="evaluate the predictions already in FIELD (e.g. class_id of a segmented bag); no network "
                        "run; their classes are --checkpoint's when given, else SemanticKITTI's")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    p.add_argument("--attribute-kitti", action="store_true",
                   help="credit KITTI / SemanticKITTI in the report (automatic for KITTI folders and 'kitti' paths)")
    add_camera_flag(p)
    add_progress_flag(p)
    add_params_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from elite_ros.recording import Recording
    from elite_ros.replay import free_path, replay

    recording = Recording.open(args.input)
    report = Path(args.report) if args.report else free_path(Path.cwd() / f"report_{recording.path.name}")
    exclude = [args.stored_predictions] if args.stored_predictions else []
    ground_truth = CloudGroundTruth(args.gt_field, args.gt_kind, exclude=exclude)
    notes: list[str] = []
    params = params_from_args(args)
    if args.stored_predictions:
        classes = _stored_classes(params)
        ground_truth.classes = classes
        evaluation = _evaluate_stored(recording, args.topic, args.stored_predictions, ground_truth, classes,
                                      not args.no_progress)
        context = {"input": str(recording.path), "predictions": f"stored field '{args.stored_predictions}'"}
    else:
        handler = load_handler(params)
        ground_truth.classes = handler.classes  # raw ground-truth ids through the model's learning map
        evaluation = Evaluation(classes=handler.classes)
        camera = camera_for_run(args, recording, handler, params)
        summary = replay(recording, handler, output=None, topics=args.topic, outputs=(), evaluation=evaluation,
                         ground_truth=ground_truth, progress=not args.no_progress,
                         log=lambda line: print(line, file=sys.stderr), camera=camera)
        print(summary.text())
        context = run_context(recording, handler, params)
        if handler.uses_camera:
            context["camera"] = ("none: every frame on the imputation path" if camera is None else
                                 f"{camera.image}: {summary.with_image} frames with an image, "
                                 f"{summary.without_image} without")
        if not handler.trained:
            notes.append(UNTRAINED_NOTE)
    if ground_truth.found:
        context["ground_truth"] = f"field '{ground_truth.found}'"
    write_report(report, evaluation, context=context, notes=notes,
                 attributions=attributions(recording, args.attribute_kitti),
                 figure_note=UNTRAINED_FIGURE_NOTE if notes else "", overwrite=args.overwrite)
    print_result(evaluation, report)
    return 0


def _stored_classes(params: SegmentParams) -> ClassTable:
    """The classes of stored predictions: the named checkpoint's (its metadata only), else SemanticKITTI's."""
    if not params.checkpoint:
        return SEMANTIC_KITTI
    from elite_ros.checkpoint import read_metadata

    try:
        return read_metadata(Path(params.checkpoint).expanduser()).classes
    except CheckpointError as error:
        raise ParameterError("checkpoint", str(error)) from None


def _evaluate_stored(recording: Recording, topics: list[str] | None, field: str, ground_truth: CloudGroundTruth,
                     classes: ClassTable, progress: bool) -> Evaluation:
    """Score the predictions a recording already carries in `field` (no network run)."""
    from tqdm import tqdm

    from elite_ros.cloud import decode, read_points

    evaluation = Evaluation(classes=classes)
    chosen = recording.select(topics)
    total = sum(recording.topics[t][1] for t in chosen)
    for message in tqdm(recording.messages(chosen), total=total, disable=not progress, desc="evaluate"):
        points = read_points(message.msg)
        if field not in (points.dtype.names or ()):
            raise ParameterError("--stored-predictions",
                                 f"field {field!r} not in {message.topic} (fields: {points.dtype.names})")
        prediction = ground_truth_ids(points[field], ground_truth_kind(field), classes)
        evaluation.add_frame(None, points.shape[0])
        truth = ground_truth(message.msg)
        if truth is not None:
            evaluation.add_labels(truth, prediction, points=partial(decode, message.msg, None),
                                  name=f"{message.topic} @ {message.timestamp} ns")
    return evaluation
