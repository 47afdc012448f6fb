"""`elite-ros`: segment recordings, evaluate them, inspect bags, and a one-command demo (no ROS needed).

    elite-ros segment IN [OUT] [--visualization] [--filtered] [--keep-other-topics] [--topic T]
    elite-ros evaluate IN [--report DIR] [--gt-field F] [--stored-predictions FIELD]
    elite-ros info IN
    elite-ros demo
    elite-ros benchmark IN [--repeat N]

IN is a ROS 1 bag, a rosbag2 folder (sqlite3 or mcap) or a SemanticKITTI/KITTI sequence folder.
Parameters come from config/segment.param.yaml (the node's file) unless --params-file / -p say otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from elite_ros import __version__
from elite_ros.evaluate import Evaluation
from elite_ros.ground_truth import CloudGroundTruth, ground_truth_ids, ground_truth_kind
from elite_ros.handler import OUTPUTS
from elite_ros.params import ParameterError, SegmentParams, load_params_file
from elite_ros.report import KITTI_ATTRIBUTION, SEMANTICKITTI_ATTRIBUTION, write_report

UNTRAINED_NOTE = ("The checkpoint's weights are UNTRAINED (random initialisation): the labels and IoU values "
                  "are meaningless; they only show that the pipeline runs end to end.")
UNTRAINED_FIGURE_NOTE = "UNTRAINED weights: labels meaningless"
EXIT_USAGE = 2
DEMO_FRAMES = 3  # synthetic frames the demo generates (3-5 keep it under 2 minutes on 2 cores)
DEMO_FIXTURE = ("semantickitti", "spvnas_000000")  # labelled real scan in ../shared/data
DATA_ENV = "ELITE_ROS_DATA"


# ------------------------------------------------------------------------------------------- helpers
def _params(args: argparse.Namespace) -> SegmentParams:
    params = load_params_file(args.params_file)
    overrides: dict[str, Any] = {}
    for item in args.param or []:
        if "=" not in item:
            raise ParameterError(item, "expected NAME=VALUE")
        name, value = item.split("=", 1)
        overrides[name.strip()] = yaml.safe_load(value)
    for name in ("checkpoint", "device"):
        if getattr(args, name, None):
            overrides[name] = getattr(args, name)
    return params.replace(**overrides) if overrides else params


def _handler(params: SegmentParams):
    from elite_ros.handler import SegmentationHandler

    handler = SegmentationHandler.from_params(params)
    if not handler.trained:
        print(f"warning: {UNTRAINED_NOTE}", file=sys.stderr)
    hint = handler.precision_hint
    if hint:
        print(f"note: {hint}", file=sys.stderr)
    return handler


def _context(recording, handler, params: SegmentParams) -> dict[str, Any]:
    seg = handler.segmenter
    return {
        "input": str(recording.path), "elite_ros": __version__,
        "checkpoint": params.checkpoint or "bundled default",
        "weights": "trained" if handler.trained else "UNTRAINED",
        "device": str(getattr(seg, "device", params.device)), "backend": str(getattr(seg, "backend", params.backend)),
        "precision": params.precision, "tta_votes": params.tta_votes, "max_points": params.max_points,
        "range_m": f"{params.min_range:g}..{params.max_range:g}",
    }


def _attributions(recording, forced: bool = False) -> list[str]:
    """KITTI / SemanticKITTI credits when the data are KITTI-derived (a KITTI folder, 'kitti' in the path, or
    --attribute-kitti for converted bags whose name does not say so)."""
    return [KITTI_ATTRIBUTION, SEMANTICKITTI_ATTRIBUTION] if forced or recording.is_kitti else []


# ------------------------------------------------------------------------------------------- commands
def cmd_segment(args: argparse.Namespace) -> int:
    from elite_ros.replay import Recording, default_output_path, replay

    recording = Recording.open(args.input)
    params = _params(args)
    handler = _handler(params)
    outputs = ["segmentation"] + ["visualization"] * args.visualization + ["filtered"] * args.filtered
    output = Path(args.output) if args.output else default_output_path(args.input)
    summary = replay(recording, handler, output=output, topics=args.topic, outputs=outputs,
                     keep_other_topics=args.keep_other_topics, storage=args.storage, progress=not args.no_progress,
                     log=lambda line: print(line, file=sys.stderr))
    for source, targets in summary.topics.items():
        print(f"{source} -> {', '.join(targets)}")
    print(summary.text())
    if args.json:
        print(json.dumps(summary.to_dict()))
    return 0 if summary.frames or not summary.errors else 1


def _evaluate_stored(recording, topics, field: str, ground_truth: CloudGroundTruth, progress: bool) -> Evaluation:
    from tqdm import tqdm

    from elite_ros.cloud import read_points

    evaluation = Evaluation()
    chosen = recording.select(topics)
    total = sum(recording.topics[t][1] for t in chosen)
    for message in tqdm(recording.messages(chosen), total=total, disable=not progress, desc="evaluate"):
        points = read_points(message.msg)
        if field not in points.dtype.names:
            raise ParameterError("--stored-predictions",
                                 f"field {field!r} not in {message.topic} (fields: {points.dtype.names})")
        prediction = ground_truth_ids(points[field], ground_truth_kind(field))
        evaluation.add_frame(None, points.shape[0])
        truth = ground_truth(message.msg)
        if truth is not None:
            evaluation.add_labels(truth, prediction)
    return evaluation


def cmd_evaluate(args: argparse.Namespace) -> int:
    from elite_ros.replay import Recording, free_path, replay

    recording = Recording.open(args.input)
    report = Path(args.report) if args.report else free_path(Path.cwd() / f"report_{recording.path.name}")
    exclude = [args.stored_predictions] if args.stored_predictions else []
    ground_truth = CloudGroundTruth(args.gt_field, args.gt_kind, exclude=exclude)
    notes: list[str] = []
    if args.stored_predictions:
        evaluation = _evaluate_stored(recording, args.topic, args.stored_predictions, ground_truth,
                                      not args.no_progress)
        context = {"input": str(recording.path), "predictions": f"stored field '{args.stored_predictions}'"}
    else:
        params = _params(args)
        handler = _handler(params)
        evaluation = Evaluation()
        summary = replay(recording, handler, output=None, topics=args.topic, outputs=(), evaluation=evaluation,
                         ground_truth=ground_truth, progress=not args.no_progress,
                         log=lambda line: print(line, file=sys.stderr))
        print(summary.text())
        context = _context(recording, handler, params)
        if not handler.trained:
            notes.append(UNTRAINED_NOTE)
    if ground_truth.found:
        context["ground_truth"] = f"field '{ground_truth.found}'"
    write_report(report, evaluation, context=context, notes=notes, attributions=_attributions(recording, args.attribute_kitti),
                 figure_note=UNTRAINED_FIGURE_NOTE if notes else "", overwrite=args.overwrite)
    _print_result(evaluation, report)
    return 0


def _print_result(evaluation: Evaluation, report: Path) -> None:
    metrics = evaluation.metrics()
    if metrics["miou"] is not None:
        print(f"mIoU {metrics['miou'] * 100:.1f} % over {metrics['labelled_frames']} labelled frames "
              f"(19 classes, ref §8)")
    elif evaluation.labelled_frames == 0:
        print("no ground truth found: latency only")
    print(f"report: {report / 'report.md'}")


def cmd_info(args: argparse.Namespace) -> int:
    from elite_ros.cloud import DATATYPE_NAMES, decode
    from elite_ros.replay import Recording

    recording = Recording.open(args.input)
    print(f"{recording.path} ({recording.kind})")
    width = max(len(t) for t in recording.topics) if recording.topics else 5
    for topic, (msgtype, count) in recording.topics.items():
        print(f"  {topic:<{width}}  {msgtype}  x{count}")
    for topic in recording.select(args.topic) if recording.cloud_topics else []:
        print(f"\n{topic}:")
        for i, message in enumerate(recording.messages([topic])):
            msg = message.msg
            if i == 0:
                print(f"  frame_id {msg.header.frame_id!r}, point_step {msg.point_step}, row_step {msg.row_step}, "
                      f"{'big' if msg.is_bigendian else 'little'}-endian, is_dense {bool(msg.is_dense)}")
                print("  fields: " + ", ".join(
                    f"{f.name} {DATATYPE_NAMES.get(f.datatype, f.datatype)}@{f.offset}"
                    + (f"x{f.count}" if f.count != 1 else "") for f in msg.fields))
            try:
                finite = f"{len(decode(msg, intensity_field=None)):,} finite"
            except ValueError as error:
                finite = f"malformed: {error}"
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            count = msg.height * msg.width
            print(f"  [{i}] stamp {stamp:.6f}  {msg.height} x {msg.width} = {count:,} points ({finite})")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from elite_ros.replay import Recording, replay

    recording = Recording.open(args.input)
    params = _params(args)
    handler = _handler(params)
    runs = []
    for _ in range(args.repeat):
        summary = replay(recording, handler, output=None, topics=args.topic, outputs=("segmentation",),
                         progress=False)
        runs.append(summary.latencies_ms)
    from elite_ros.evaluate import latency_stats

    all_ms = [v for run in runs for v in run]
    print(json.dumps({"input": str(recording.path), "frames": len(all_ms), "repeat": args.repeat,
                      "device": str(handler.segmenter.device), "backend": handler.segmenter.backend,
                      "weights": "trained" if handler.trained else "untrained",
                      "total_ms": latency_stats(all_ms), "note": "shared CPU: pessimistic"}))
    return 0


# ------------------------------------------------------------------------------------------- demo
def find_data_dir() -> Path | None:
    """The real fixtures: $ELITE_ROS_DATA, else ../shared/data beside the repository or the working dir."""
    candidates = [os.environ.get(DATA_ENV)] if os.environ.get(DATA_ENV) else []
    candidates += [Path(__file__).resolve().parents[2] / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / Path(*DEMO_FIXTURE)).is_dir():
            return Path(candidate)
    return None


def _synthetic_writer():
    """`generate_sequence(out, frames, seed, progress)` of the synthetic world, when the training part of the
    package is installed (the only place the runtime touches it: an optional import for the demo)."""
    try:
        from elite_ros_training.synthetic import generate_sequence
    except ImportError:
        return None
    return generate_sequence


def make_demo_input(cache: Path, frames: int = DEMO_FRAMES) -> tuple[Path, str]:
    """Create (or reuse) the demo bag in `cache`; returns (bag path, description of its source)."""
    from elite_ros.bag import BagWriter
    from elite_ros.replay import iter_kitti

    write_sequence = _synthetic_writer()
    if write_sequence is not None:
        bag, source = cache / f"demo_synthetic_{frames}", f"synthetic KITTI-like world, {frames} frames"
        folder = cache / f"synthetic_sequence_{frames}"
        if not bag.exists():
            if not folder.exists():
                write_sequence(folder, frames=frames, seed=0, progress=True)
    else:
        data = find_data_dir()
        if data is None:
            raise FileNotFoundError(
                f"no demo data: neither the synthetic world (elite_ros_training) nor the SemanticKITTI fixture "
                f"({'/'.join(DEMO_FIXTURE)}) under ${DATA_ENV} or ../shared/data was found")
        folder = data / Path(*DEMO_FIXTURE)
        bag, source = cache / "demo_semantickitti", f"real SemanticKITTI scan {folder}"
    if not bag.exists():
        with BagWriter(bag) as writer:
            for message in iter_kitti(folder):
                writer.write(message.topic, message.msgtype, message.timestamp, message.msg)
    return bag, source


def cmd_demo(args: argparse.Namespace) -> int:
    from elite_ros.checkpoint import cache_dir
    from elite_ros.replay import Recording, free_path, replay

    started = time.perf_counter()
    cache = Path(args.cache) if args.cache else cache_dir() / "demo"
    cache.mkdir(parents=True, exist_ok=True)
    bag, source = make_demo_input(cache, args.frames)
    print(f"demo input: {bag} ({source})")
    recording = Recording.open(bag)
    params = _params(args)
    handler = _handler(params)
    run = free_path(cache / time.strftime("run_%Y%m%d_%H%M%S"))
    evaluation = Evaluation()
    summary = replay(recording, handler, output=run / "segmented", outputs=OUTPUTS,
                     evaluation=evaluation, ground_truth=CloudGroundTruth(), progress=not args.no_progress)
    print(summary.text())
    notes = [] if handler.trained else [UNTRAINED_NOTE]
    attributions = [KITTI_ATTRIBUTION, SEMANTICKITTI_ATTRIBUTION] if "SemanticKITTI" in source else []
    context = _context(recording, handler, params) | {"source": source, "ground_truth": "field 'label'"}
    report = write_report(run / "report", evaluation, title="elite_ros demo report", context=context, notes=notes,
                          attributions=attributions, figure_note=UNTRAINED_FIGURE_NOTE if notes else "")
    if not handler.trained:
        print(f"NOTE: {UNTRAINED_NOTE}")
    _print_result(evaluation, report)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


# ------------------------------------------------------------------------------------------- parser
def _add_params_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("parameters (as the node's; see config/segment.param.yaml)")
    group.add_argument("--params-file", help="ROS 2 params file (default: the shipped config/segment.param.yaml)")
    group.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                       help="override one parameter, e.g. -p tta_votes=3 -p 'filtered_classes=[road]' (repeatable)")
    group.add_argument("--checkpoint", help="student checkpoint .safetensors (default: the bundled, untrained one)")
    group.add_argument("--device", help="auto | cpu | cuda | cuda:N")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elite-ros", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"elite_ros {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("segment", help="segment every PointCloud2 of a bag or KITTI folder into a new rosbag2")
    p.add_argument("input", help="ROS 1 bag, rosbag2 folder (sqlite3/mcap) or SemanticKITTI/KITTI sequence folder")
    p.add_argument("output", nargs="?", help="rosbag2 folder to write (must not exist; default: <input>_segmented)")
    p.add_argument("--topic", action="append", help="PointCloud2 topic to segment (repeatable; default: all)")
    p.add_argument("--visualization", action="store_true", help="also write <topic>/visualization (x, y, z, rgb)")
    p.add_argument("--filtered", action="store_true", help="also write <topic>/filtered (input minus filtered_classes)")
    p.add_argument("--keep-other-topics", action="store_true", help="copy every other topic into the output")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage (default mcap)")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_params_options(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="per-class IoU / mIoU (ref §8) and latency; writes a report folder")
    p.add_argument("input", help="bag or SemanticKITTI folder whose clouds carry ground truth")
    p.add_argument("--report", help="report folder to write (default: ./report_<input name>)")
    p.add_argument("--topic", action="append", help="PointCloud2 topic (repeatable; default: all)")
    p.add_argument("--gt-field", help="ground-truth field (default: first of label, gt_label, gt_class_id; never class_id, "
                        "this package's own output, unless named here)")
    p.add_argument("--gt-kind", choices=("auto", "raw", "train"), default="auto",
                   help="raw SemanticKITTI ids or training ids 0..19 (auto: label/gt_label raw, else training ids)")
    p.add_argument("--stored-predictions", metavar="FIELD",
                   help="evaluate the predictions already in FIELD (e.g. class_id of a segmented bag); no network run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    p.add_argument("--attribute-kitti", action="store_true",
                   help="credit KITTI / SemanticKITTI in the report (automatic for KITTI folders and 'kitti' paths)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_params_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="topics of a bag; field layout and per-frame point counts of its clouds")
    p.add_argument("input", help="bag or KITTI folder")
    p.add_argument("--topic", action="append", help="only these PointCloud2 topics")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="no ROS, no GPU: segment and evaluate a small labelled input, print the report")
    p.add_argument("--cache", help="where the demo input and runs go (default: ~/.cache/elite_ros/demo)")
    p.add_argument("--frames", type=int, default=DEMO_FRAMES,
                   help=f"synthetic frames to generate (default {DEMO_FRAMES})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_params_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("benchmark", help="time the handler on a recording; prints JSON")
    p.add_argument("input")
    p.add_argument("--topic", action="append")
    p.add_argument("--repeat", type=int, default=1)
    _add_params_options(p)
    p.set_defaults(func=cmd_benchmark)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ParameterError as error:
        print(f"elite-ros {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"elite-ros {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
