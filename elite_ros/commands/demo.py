"""`elite-ros demo`: no ROS, no GPU: segment and evaluate a small labelled input and print the report.

The input is a few frames of the synthetic world when the training part of the package is installed,
else the labelled SemanticKITTI scan among the real fixtures ($ELITE_ROS_DATA or ../shared/data).
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from elite_ros.command import add_progress_flag
from elite_ros.commands.options import (
    UNTRAINED_FIGURE_NOTE,
    UNTRAINED_NOTE,
    add_params_options,
    load_handler,
    params_from_args,
    print_result,
    run_context,
)
from elite_ros.evaluate import Evaluation
from elite_ros.ground_truth import CloudGroundTruth
from elite_ros.handler import OUTPUTS
from elite_ros.report import KITTI_ATTRIBUTION, SEMANTICKITTI_ATTRIBUTION, write_report

DEMO_FRAMES = 3  # synthetic frames the demo generates (3-5 keep it under 2 minutes on 2 cores)
DEMO_FIXTURE = ("semantickitti", "spvnas_000000")  # labelled real scan in ../shared/data
DATA_ENV = "ELITE_ROS_DATA"
REPOSITORY = Path(__file__).resolve().parents[2]  # the source tree (elite_ros/commands/demo.py -> repository)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="no ROS, no GPU: segment and evaluate a small labelled input, print the "
                                           "report")
    p.add_argument("--cache", help="where the demo input and runs go (default: ~/.cache/elite_ros/demo)")
    p.add_argument("--frames", type=int, default=DEMO_FRAMES,
                   help=f"synthetic frames to generate (default {DEMO_FRAMES})")
    add_progress_flag(p)
    add_params_options(p)
    p.set_defaults(func=run)
    return p


def find_data_dir() -> Path | None:
    """The real fixtures: $ELITE_ROS_DATA, else ../shared/data beside the repository or the working dir."""
    candidates = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    candidates += [REPOSITORY.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if (candidate / Path(*DEMO_FIXTURE)).is_dir():
            return Path(candidate)
    return None


def _synthetic_writer() -> Callable[..., Path] | None:
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
    from elite_ros.recording import iter_kitti

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


def run(args: argparse.Namespace) -> int:
    """Make (or reuse) the demo input, segment and evaluate it, write and point to the report."""
    from elite_ros.checkpoint import cache_dir
    from elite_ros.recording import Recording
    from elite_ros.replay import free_path, replay

    started = time.perf_counter()
    cache = Path(args.cache) if args.cache else cache_dir() / "demo"
    cache.mkdir(parents=True, exist_ok=True)
    bag, source = make_demo_input(cache, args.frames)
    print(f"demo input: {bag} ({source})")
    recording = Recording.open(bag)
    params = params_from_args(args)
    handler = load_handler(params)
    run_dir = free_path(cache / time.strftime("run_%Y%m%d_%H%M%S"))
    evaluation = Evaluation(classes=handler.classes)
    summary = replay(recording, handler, output=run_dir / "segmented", outputs=OUTPUTS, evaluation=evaluation,
                     ground_truth=CloudGroundTruth(classes=handler.classes), progress=not args.no_progress)
    print(summary.text())
    notes = [] if handler.trained else [UNTRAINED_NOTE]
    credits = [KITTI_ATTRIBUTION, SEMANTICKITTI_ATTRIBUTION] if "SemanticKITTI" in source else []
    context = run_context(recording, handler, params) | {"source": source, "ground_truth": "field 'label'"}
    report = write_report(run_dir / "report", evaluation, title="elite_ros demo report", context=context, notes=notes,
                          attributions=credits, figure_note=UNTRAINED_FIGURE_NOTE if notes else "")
    if not handler.trained:
        print(f"NOTE: {UNTRAINED_NOTE}")
    print_result(evaluation, report)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0
