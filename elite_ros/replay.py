"""Replay a recording through `SegmentationHandler`: what `elite-ros segment`, `evaluate` and `demo` run.

Inputs (never modified, only read):
- a bag: ROS 1 ``.bag``, rosbag2 folder (sqlite3 or mcap) or bare ``.db3`` / ``.mcap`` (`elite_ros.bag`);
- a SemanticKITTI / KITTI sequence folder: ``velodyne/*.bin`` (float32 x, y, z, intensity 0..1) with
  optional ``labels/*.label`` (uint32: raw semantic id | instance << 16) and ``times.txt`` (seconds), or a
  flat folder of ``NNNNNN.bin`` [+ ``NNNNNN.label``]. Each scan becomes a 1 x N PointCloud2 on
  `KITTI_TOPIC` (frame `KITTI_FRAME`) with fields x, y, z, intensity [+ ``label`` UINT32], stamped with
  times.txt (or 10 Hz from 0 when absent).

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from elite_ros.bag import TYPESTORE, BagMessage, BagWriter, bag_info, iter_messages
from elite_ros.camera_feed import CameraFeed, stamp_ns
from elite_ros.cloud import POINTCLOUD2_TYPE, decode, make_cloud
from elite_ros.evaluate import Evaluation, latency_stats
from elite_ros.handler import OUTPUTS, SegmentationHandler
from elite_ros.kitti import KittiFormatError, read_bin, read_label, read_times
from elite_ros.params import ParameterError

KITTI_TOPIC = "/kitti/velodyne_points"
KITTI_FRAME = "velodyne"
KITTI_PERIOD_NS = 100_000_000  # 10 Hz HDL-64E, used when times.txt is absent
MAX_REPORTED_ERRORS = 5  # skipped-message lines printed during a replay
MAX_STORED_ERRORS = 20  # skipped-message lines kept in ReplaySummary.errors (the counters count them all)
IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPIC = "/tf_static"


class ReplayError(ValueError):
    """An input that cannot be replayed (unknown format, no cloud topic, unreadable file), named."""


# ------------------------------------------------------------------------------------------- inputs
def is_kitti_folder(path: str | os.PathLike[str]) -> bool:
    """True for a SemanticKITTI/KITTI sequence folder (``velodyne/*.bin``) or a flat folder of ``*.bin``."""
    path = Path(path)
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return False
    return any((path / "velodyne").glob("*.bin")) or any(path.glob("*.bin"))


def _kitti_files(folder: Path) -> list[tuple[Path, Path | None]]:
    scans = folder / "velodyne" if (folder / "velodyne").is_dir() else folder
    labels = folder / "labels" if (folder / "velodyne").is_dir() else folder
    bins = sorted(scans.glob("*.bin"))
    if not bins:
        raise ReplayError(f"{folder}: no .bin scans found")
    return [(b, (labels / f"{b.stem}.label") if (labels / f"{b.stem}.label").is_file() else None) for b in bins]


def _kitti_times(folder: Path, count: int) -> list[int]:
    times_file = folder / "times.txt"
    if times_file.is_file():
        try:
            times = read_times(times_file).tolist()
        except KittiFormatError as error:
            raise ReplayError(str(error)) from None
        if len(times) < count:
            raise ReplayError(f"{times_file}: {len(times)} times for {count} scans")
        return [int(round(t * 1e9)) for t in times[:count]]
    return [i * KITTI_PERIOD_NS for i in range(count)]


def read_kitti_scan(bin_path: Path, label_path: Path | None = None) -> dict[str, np.ndarray]:
    """One KITTI scan as point fields: x, y, z, intensity float32 (N,) [+ label uint32 (N,)]."""
    try:
        points = read_bin(bin_path)
        fields = {name: np.ascontiguousarray(points[:, i]) for i, name in enumerate(("x", "y", "z", "intensity"))}
        if label_path is not None:
            fields["label"] = read_label(label_path, len(points))
    except KittiFormatError as error:
        raise ReplayError(str(error)) from None
    return fields


def kitti_cloud(fields: dict[str, np.ndarray], stamp_ns: int, frame_id: str = KITTI_FRAME) -> Any:
    """A rosbags PointCloud2 (Kilted classes) from per-point fields, stamped `stamp_ns`."""
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    header = Header(stamp=Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                    frame_id=frame_id)
    return make_cloud(fields, header)


def iter_kitti(folder: str | os.PathLike[str], topic: str = KITTI_TOPIC) -> Iterator[BagMessage]:
    """The scans of a KITTI folder as BagMessages (record time = header stamp)."""
    folder = Path(folder)
    files = _kitti_files(folder)
    for (bin_path, label_path), stamp in zip(files, _kitti_times(folder, len(files))):
        yield BagMessage(topic, POINTCLOUD2_TYPE, stamp, kitti_cloud(read_kitti_scan(bin_path, label_path), stamp))


@dataclass(frozen=True)
class Recording:
    """An input recording: a bag or a KITTI folder, with its topics {name: (msgtype, count)}."""

    path: Path
    kind: str  # "bag" | "kitti"
    topics: dict[str, tuple[str, int]]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Recording:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        if is_kitti_folder(path):
            return cls(path, "kitti", {KITTI_TOPIC: (POINTCLOUD2_TYPE, len(_kitti_files(path)))})
        return cls(path, "bag", bag_info(path))

    @property
    def cloud_topics(self) -> list[str]:
        return [t for t, (msgtype, _) in self.topics.items() if msgtype == POINTCLOUD2_TYPE]

    @property
    def is_kitti(self) -> bool:
        """True when the data are KITTI-derived (attribution needed): a KITTI folder or 'kitti' in the path."""
        return self.kind == "kitti" or "kitti" in str(self.path).lower()

    def select(self, topics: Iterable[str] | None) -> list[str]:
        """The cloud topics to segment: `topics` (checked) or every PointCloud2 topic."""
        clouds = self.cloud_topics
        if not clouds:
            raise ReplayError(f"{self.path}: no {POINTCLOUD2_TYPE} topic (topics: {', '.join(self.topics) or 'none'})")
        if not topics:
            return clouds
        chosen = list(dict.fromkeys(topics))
        for topic in chosen:
            if topic not in self.topics:
                raise ReplayError(f"{self.path}: no topic {topic!r} (PointCloud2 topics: {', '.join(clouds)})")
            if topic not in clouds:
                raise ReplayError(f"{self.path}: topic {topic!r} is {self.topics[topic][0]}, not {POINTCLOUD2_TYPE}")
        return chosen

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Messages in record order (all topics when None)."""
        if self.kind == "kitti":
            return iter_kitti(self.path)
        return iter_messages(self.path, topics=None if topics is None else list(topics))


@dataclass(frozen=True)
class CameraTopics:
    """Where a recording's camera is: image and CameraInfo topics, the static TF topic (None = none), and the
    pairing tolerance (ns); `extrinsic` (4, 4) LiDAR -> optical frame, None = from the TF topic."""

    image: str
    info: str
    tf: str | None
    tolerance_ns: int
    extrinsic: Any = None

    @property
    def topics(self) -> list[str]:
        return [self.image, self.info] + ([self.tf] if self.tf else [])


def find_camera_topics(recording: Recording, camera: Any) -> CameraTopics | None:
    """The camera of `recording` for a fusion model: `camera` (a `params.CameraParams`) names the topics, else
    the recording's only Image topic and its CameraInfo (``camera_info`` beside it, else the only one);
    /tf_static gives the extrinsic unless ``camera.extrinsic`` does. None when the recording has no image.
    ReplayError when the choice is ambiguous or a named topic is missing."""
    of_type = {kind: [t for t, (msgtype, _) in recording.topics.items() if msgtype == kind]
               for kind in (IMAGE_TYPE, CAMERA_INFO_TYPE, TF_TYPE)}
    image = camera.image_topic.strip()
    if not image:
        if not of_type[IMAGE_TYPE]:
            return None
        if len(of_type[IMAGE_TYPE]) > 1:
            raise ReplayError(f"{recording.path}: several Image topics ({', '.join(of_type[IMAGE_TYPE])}): name one "
                              f"with -p camera.image_topic=TOPIC, or --no-camera")
        image = of_type[IMAGE_TYPE][0]
    info = camera.info_topic.strip() or image.rsplit("/", 1)[0] + "/camera_info"
    if info not in recording.topics and not camera.info_topic.strip() and len(of_type[CAMERA_INFO_TYPE]) == 1:
        info = of_type[CAMERA_INFO_TYPE][0]
    for topic, kind in ((image, IMAGE_TYPE), (info, CAMERA_INFO_TYPE)):
        if recording.topics.get(topic, ("",))[0] != kind:
            raise ReplayError(f"{recording.path}: no {kind} topic {topic!r} (set -p camera.image_topic / "
                              f"camera.info_topic, or --no-camera)")
    extrinsic = camera.lidar_to_camera()
    tf = TF_STATIC_TOPIC if extrinsic is None and TF_STATIC_TOPIC in of_type[TF_TYPE] else None
    if extrinsic is None and tf is None:
        raise ReplayError(f"{recording.path}: no {TF_STATIC_TOPIC} for the LiDAR -> camera transform: set "
                          f"-p camera.extrinsic=[12 numbers], or --no-camera")
    return CameraTopics(image, info, tf, int(camera.sync_tolerance_ms * 1e6), extrinsic)


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
