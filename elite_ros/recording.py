"""Input recordings of the bag tools: a bag, or a SemanticKITTI / KITTI sequence folder read as one, and
where a recording's camera is (for fusion checkpoints).

A KITTI folder: ``velodyne/*.bin`` (float32 x, y, z, intensity 0..1) with optional ``labels/*.label``
(uint32: raw semantic id | instance << 16) and ``times.txt`` (seconds), or a flat folder of ``NNNNNN.bin``
[+ ``NNNNNN.label``]. Each scan becomes a 1 x N PointCloud2 on `KITTI_TOPIC` (frame `KITTI_FRAME`) with
fields x, y, z, intensity [+ ``label`` UINT32], stamped with times.txt (or 10 Hz from 0 when absent).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from elite_ros.bag import TYPESTORE, BagMessage, bag_info, iter_messages
from elite_ros.cloud import POINTCLOUD2_TYPE, make_cloud
from elite_ros.kitti import KittiFormatError, read_bin, read_label, read_times

KITTI_TOPIC = "/kitti/velodyne_points"
KITTI_FRAME = "velodyne"
KITTI_PERIOD_NS = 100_000_000  # 10 Hz HDL-64E, used when times.txt is absent
IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPIC = "/tf_static"


class ReplayError(ValueError):
    """An input that cannot be replayed (unknown format, no cloud topic, unreadable file), named."""


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
