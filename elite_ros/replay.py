"""Replay a recording through `SegmentationHandler`: what `elite-ros segment`, `evaluate` and `demo` run.

Inputs (never modified, only read; `elite_ros.recording`): a bag -- ROS 1 ``.bag``, rosbag2 folder (sqlite3
or mcap) or bare ``.db3`` / ``.mcap`` (`elite_ros.bag`) -- or a SemanticKITTI / KITTI sequence folder read as
one.

Output: a rosbag2 (mcap by default) with, per segmented topic T, ``T/segmentation`` (and on request
``T/visualization`` and ``T/filtered``) at the input messages' own record timestamps, headers unchanged;
with `keep_other_topics`, every other topic copied as is. Written atomically by `bag.BagWriter`.

Camera (a fusion checkpoint, docs/reference.md §14; `CameraTopics`): the bag's images, CameraInfo and
static TF (as `elite-ros-train convert` writes KITTI's) go through `camera_feed.CameraFeed` as in the node,
except that a cloud waits until the recording has passed its record time by the pairing tolerance, so an
image recorded just after its cloud still pairs with it; a cloud without an image runs on the imputation
path.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from elite_ros.bag import BagMessage, BagWriter
from elite_ros.camera_feed import CameraFeed, stamp_ns
from elite_ros.cloud import POINTCLOUD2_TYPE, decode
from elite_ros.evaluate import Evaluation, latency_stats
from elite_ros.handler import OUTPUTS, SegmentationHandler
from elite_ros.params import ParameterError
from elite_ros.recording import CameraTopics, Recording, ReplayError

MAX_REPORTED_ERRORS = 5  # skipped-message lines printed during a replay
MAX_STORED_ERRORS = 20  # skipped-message lines kept in ReplaySummary.errors (the counters count them all)


class _CameraReplay:
    """A recording's camera messages into a `CameraFeed`; the extrinsic from its static TF when needed."""

    def __init__(self, topics: CameraTopics, log: Any) -> None:
        from elite_ros.transforms import TransformTree

        self.topics = topics
        self.feed = CameraFeed(topics.tolerance_ns, topics.extrinsic)
        self.tree = TransformTree()
        self.image_frame = ""
        self.log = log
        self.refused = 0

    def add(self, message: BagMessage) -> None:
        from elite_ros.transforms import transform_from_msg

        if message.topic == self.topics.image:
            self.image_frame = self.image_frame or message.msg.header.frame_id
            try:
                self.feed.add_image_msg(message.msg)
            except ValueError as error:
                self.refused += 1
                if self.refused == 1:
                    self.log(f"image refused ({message.topic} @ {message.timestamp}): {error}")
        elif message.topic == self.topics.info:
            self.feed.set_camera_info(message.msg)
        else:
            for transform in message.msg.transforms:
                self.tree.add(transform_from_msg(transform))

    def match(self, cloud: BagMessage) -> tuple[Any, Any]:
        if not self.feed.has_extrinsic and self.image_frame:
            with contextlib.suppress(LookupError):
                self.feed.set_extrinsic(self.tree.lookup(self.image_frame, cloud.msg.header.frame_id))
        return self.feed.match(stamp_ns(cloud.msg.header))


# ------------------------------------------------------------------------------------------- replay
@dataclass
class ReplaySummary:
    """What a replay did. latency: per-frame handler total, milliseconds (count, mean, p50, p90, p99, max)."""

    frames: int = 0
    points: int = 0
    rejected: int = 0
    failed: int = 0
    copied: int = 0  # messages of other topics copied
    wall_s: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the first MAX_STORED_ERRORS skip reasons
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # per-frame handler totals
    output: Path | None = None
    topics: dict[str, list[str]] = field(default_factory=dict)  # input topic -> output topics
    camera: str | None = None  # the image topic used (fusion checkpoints)
    with_image: int = 0  # frames segmented with an image
    without_image: int = 0  # frames on the imputation path (camera used, but no image within the tolerance)

    @property
    def hz(self) -> float:
        """Frames per second of wall time (throughput of the whole replay, I/O included)."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def text(self) -> str:
        """The closing summary line(s)."""
        lat = self.latency
        parts = [f"{self.frames} frames", f"{self.points:,} points", f"{self.hz:.2f} Hz"]
        if lat.get("count"):
            parts.append(f"latency p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms")
        if self.rejected or self.failed:
            parts.append(f"{self.rejected} rejected (malformed), {self.failed} failed")
        if self.copied:
            parts.append(f"{self.copied} other messages copied")
        if self.camera is not None:
            parts.append(f"camera {self.camera}: {self.with_image} with an image, {self.without_image} without")
        line = ", ".join(parts)
        return line + (f"\nwrote {self.output}" if self.output else "")

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "points": self.points, "hz": self.hz, "wall_s": self.wall_s,
                "rejected": self.rejected, "failed": self.failed, "copied": self.copied,
                "latency": self.latency, "output": str(self.output) if self.output else None, "topics": self.topics,
                "camera": self.camera, "with_image": self.with_image, "without_image": self.without_image}


def output_topic(input_topic: str, output: str) -> str:
    """``/luminar_pointcloud`` + ``segmentation`` -> ``/luminar_pointcloud/segmentation``."""
    return f"{input_topic.rstrip('/')}/{output}"


def replay(
    recording: Recording,
    handler: SegmentationHandler,
    *,
    output: str | os.PathLike[str] | None = None,
    topics: Iterable[str] | None = None,
    outputs: Iterable[str] = ("segmentation",),
    keep_other_topics: bool = False,
    storage: str = "mcap",
    evaluation: Evaluation | None = None,
    ground_truth: Any = None,
    progress: bool = True,
    log: Any = print,
    camera: CameraTopics | None = None,
) -> ReplaySummary:
    """Run every cloud of `topics` (default: all PointCloud2 topics) through `handler`.

    output: rosbag2 folder to write (None: write nothing, e.g. for evaluation); refused when it exists or
    lies inside the input. outputs: which clouds to write per topic (OUTPUTS names). evaluation: when given,
    each frame's timings, and with `ground_truth` (callable msg -> (num_points,) training ids or None) its
    labels (and, for the bird's-eye view, its points on demand), are accumulated into it. Malformed clouds
    are skipped and counted (first few reported via `log`), as is a cloud that makes anything else raise
    (counted as failed); ReplayError when no cloud could be segmented (then no output is written).
    camera: the recording's camera for a fusion checkpoint (`find_camera_topics`; None = every frame on the
    imputation path).
    """
    outputs = [o for o in OUTPUTS if o in set(outputs)]
    selected = recording.select(topics)
    summary = ReplaySummary(topics={t: [output_topic(t, o) for o in outputs] for t in selected})
    if output is not None:
        output = Path(output)
        _refuse_overlap(recording.path, output)
        if keep_other_topics:
            _refuse_topic_clash(recording, selected, summary.topics)
    total = sum(recording.topics[t][1] for t in selected)
    if keep_other_topics:
        total = sum(count for _, count in recording.topics.values())
    read_topics = None if keep_other_topics else selected + (camera.topics if camera is not None else [])
    cameras = _CameraReplay(camera, log) if camera is not None else None
    tolerance_ns = camera.tolerance_ns if camera is not None else 0
    if camera is not None and not keep_other_topics:
        total += sum(recording.topics[t][1] for t in camera.topics)
    counters = handler.counters
    rejected_before, failed_before = counters.rejected, counters.failed
    skipped = 0
    start = time.perf_counter()
    with _maybe_writer(output, storage) as writer, _progress(total, progress, recording.path.name) as bar:

        def segment(message: BagMessage) -> None:
            nonlocal skipped
            try:
                image, model = cameras.match(message) if cameras is not None else (None, None)
                result = handler.process(message.msg, outputs, image=image, camera=model)
            except ParameterError:  # a configuration problem that every cloud would meet: stop the replay
                raise
            except Exception as error:  # noqa: BLE001 - one message never stops a replay: counted (failed)
                reason = f"unexpected {type(error).__name__}: {' '.join(str(error).split())}"
                result = handler.record_failure(getattr(message.msg, "header", None), reason)
            if not result.ok:
                skipped += 1
                line = f"{recording.path}: {message.topic} @ {message.timestamp} ns: {result.error}"
                if len(summary.errors) < MAX_STORED_ERRORS:
                    summary.errors.append(line)
                if skipped <= MAX_REPORTED_ERRORS:
                    log(f"skipped {line}")
                return
            summary.frames += 1
            summary.points += result.num_points
            summary.latencies_ms.append(result.timings_ms["total"])
            if writer is not None:
                for name in outputs:
                    writer.write(output_topic(message.topic, name), POINTCLOUD2_TYPE, message.timestamp,
                                 result.outputs[name])
            if evaluation is not None:
                evaluation.add_frame(result.timings_ms, result.num_points)
                truth = ground_truth(message.msg) if ground_truth is not None else None
                if truth is not None and result.class_id is not None:
                    evaluation.add_labels(truth, result.class_id, points=partial(decode, message.msg, None),
                                          name=f"{message.topic} @ {message.timestamp} ns")

        waiting: deque[BagMessage] = deque()  # clouds waiting for images recorded up to a tolerance later
        for message in recording.messages(read_topics):
            bar.update(1)
            while waiting and waiting[0].timestamp + tolerance_ns < message.timestamp:
                segment(waiting.popleft())
            if cameras is not None and message.topic in cameras.topics.topics:
                cameras.add(message)
            if message.topic not in selected:
                if writer is not None and keep_other_topics:
                    writer.write(message.topic, message.msgtype, message.timestamp, message.msg)
                    summary.copied += 1
                continue
            if cameras is not None:
                waiting.append(message)
            else:
                segment(message)
        while waiting:
            segment(waiting.popleft())
        if skipped and not summary.frames:  # inside the writer's block: the output is not written
            raise ReplayError(f"{recording.path}: none of its {skipped} clouds could be segmented, so nothing was "
                              f"written; the first: {summary.errors[0]}")
    if cameras is not None:
        summary.camera = cameras.topics.image
        summary.with_image = cameras.feed.counters.with_image
        summary.without_image = cameras.feed.counters.without_image
    summary.wall_s = time.perf_counter() - start
    summary.rejected = counters.rejected - rejected_before  # the handler's own classification
    summary.failed = counters.failed - failed_before
    summary.latency = latency_stats(summary.latencies_ms)
    summary.output = output
    return summary


def _refuse_overlap(source: Path, output: Path) -> None:
    src, out = source.resolve(), output.resolve()
    if out == src or src in out.parents:
        raise ReplayError(f"output {output} would be written inside the input {source}; choose another path")
    if output.exists():
        raise FileExistsError(f"output exists: {output} (elite-ros never overwrites; choose another path)")


def _refuse_topic_clash(recording: Recording, selected: list[str], written: dict[str, list[str]]) -> None:
    """ReplayError when an output topic is also an input topic that `keep_other_topics` would copy."""
    copied = set(recording.topics) - set(selected)
    for source, targets in written.items():
        for target in targets:
            if target in copied:
                raise ReplayError(
                    f"{recording.path}: output topic {target!r} (from {source!r}) already exists in the input and "
                    f"--keep-other-topics would copy it, mixing old and new clouds; segment {target!r} too "
                    f"(--topic), or drop --keep-other-topics")


def _maybe_writer(output: Path | None, storage: str) -> BagWriter | contextlib.nullcontext[None]:
    return BagWriter(output, storage=storage) if output is not None else contextlib.nullcontext()


def _progress(total: int, enabled: bool, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"segment {name}", unit="msg", disable=not enabled, dynamic_ncols=True)


_STEM = re.compile(r"[^A-Za-z0-9_.-]+")


def default_output_path(input_path: str | os.PathLike[str], suffix: str = "segmented",
                        folder: str | os.PathLike[str] | None = None) -> Path:
    """``<input name>_<suffix>`` in `folder` (default: the current directory), a free name (``_2``, ``_3``
    ... when taken). Never next to the input: a KITTI sequence or a bag usually sits inside a dataset
    folder, which a replay must not write into."""
    path = Path(input_path)
    stem = _STEM.sub("_", path.resolve().name.removesuffix(".bag").removesuffix(".mcap").removesuffix(".db3"))
    return free_path((Path.cwd() if folder is None else Path(folder)) / f"{stem}_{suffix}")


def free_path(path: str | os.PathLike[str]) -> Path:
    """`path` itself when nothing is there, else the first free ``<path>_2``, ``<path>_3`` ..."""
    path = Path(path)
    candidate, number = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.name}_{number}")
        number += 1
    return candidate
