"""Synchronised training frames from a rosbag: LiDAR cloud (+ `label` field) + nearest camera image.

For every cloud on the LiDAR topic, the image whose header stamp is nearest in time is paired with it
when it is within `tolerance_ns` (default 50 ms, half a 10 Hz LiDAR period); the projection matrix is
CameraInfo's P times the static transform LiDAR frame -> camera frame from `/tf_static`
(the TF goes to the image's own optical frame, as kitti2bag and camera drivers publish it, so the
projection is P[:, :3] · T: P's rectified intrinsics; its 4th column, a stereo camera's offset from the
reference camera, is already inside T. For KITTI this equals P2 · [R0_rect ·] Tr, see `convert.py`).

One pass at construction reads the stamps (index); frames are then read at random by record time
through the bag's chunk index, with one open reader per process, so a `DataLoader` with workers can
shuffle freely (rosbag2 messages are decoded with the Kilted typestore: PointCloud2, Image and
CameraInfo are the same in every ROS 2 distro). ROS 1 bags work too (through `elite_ros.bag`, which
reopens the bag per read), but a rosbag2 mcap (`elite-ros-train convert`) is faster to seek.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader as Rosbag2Reader

from elite_ros.bag import TYPESTORE, detect_format, iter_messages
from elite_ros.camera import image_to_rgb, projection_from  # re-exported: the runtime's, one home
from elite_ros.camera_feed import stamp_ns  # re-exported: the runtime's
from elite_ros.cloud import decode, read_points
from elite_ros_training.data.frame import Frame
from elite_ros_training.data.semantickitti import PSEUDO_LABEL_DIR, load_pseudo_labels
from elite_ros_training.data.transforms import TransformTree, transform_from_msg

CLOUD_TOPIC = "/kitti/velo/pointcloud"  # kitti2bag's topic names, used by `convert` too
IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
CAMERA_INFO_TOPIC = "/kitti/camera_color_left/camera_info"
TF_STATIC_TOPIC = "/tf_static"
SYNC_TOLERANCE_NS = 50_000_000  # 50 ms: pair an image with a cloud only if this close in time
LABEL_FIELD = "label"  # UINT32 raw SemanticKITTI value per point (PCL PointXYZL convention)
PSEUDO_LABEL_SUFFIX = f".{PSEUDO_LABEL_DIR}"  # SAM-PLG maps of a bag: <bag>.image_2_labels/<frame id>.npz


def nearest_within(query: np.ndarray, stamps: np.ndarray, tolerance: int) -> np.ndarray:
    """For each query time (Q,) int64 ns, the index of the nearest of the sorted `stamps` (S,) within
    `tolerance` ns, else -1 -> (Q,) int64."""
    if len(stamps) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    if len(stamps) > 1:
        right = np.clip(np.searchsorted(stamps, query), 1, len(stamps) - 1)
    else:
        right = np.zeros(len(query), np.int64)
    left = np.maximum(right - 1, 0)
    pick = np.where(np.abs(stamps[left] - query) <= np.abs(stamps[right] - query), left, right)
    return np.where(np.abs(stamps[pick] - query) <= tolerance, pick, -1).astype(np.int64)


@dataclass(frozen=True)
class _Stamped:
    record_ns: int  # bag record time: where to seek
    stamp_ns: int  # header stamp: what to synchronise on
    rank: int  # how many earlier messages of the topic share this record time


def bag_pseudo_label_dir(bag: str | Path) -> Path:
    """Where `elite-ros-train plg` writes a bag's SAM-PLG maps and `BagFrames` looks for them."""
    bag = Path(bag)
    return bag.with_name(bag.name + PSEUDO_LABEL_SUFFIX)


class BagFrames:
    """Random access to synchronised frames of a bag (a `FrameSource` for `PointImageDataset`).

    Args:
        path: rosbag2 folder / .mcap / .db3, or ROS 1 .bag.
        cloud_topic, image_topic, camera_info_topic, tf_topic: topic names (kitti2bag's by default).
        tolerance_ns: largest |cloud stamp - image stamp| for a pair (default 50 ms).
        require_image: drop clouds without an image within the tolerance (else they come without one).
        pseudo_label_dir: folder of SAM-PLG maps `<frame_id>.npz` (frame id = cloud number, 6 digits);
            default: `<bag>.image_2_labels` beside the bag when it exists (where `elite-ros-train plg` writes).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        cloud_topic: str = CLOUD_TOPIC,
        image_topic: str = IMAGE_TOPIC,
        camera_info_topic: str = CAMERA_INFO_TOPIC,
        tf_topic: str = TF_STATIC_TOPIC,
        tolerance_ns: int = SYNC_TOLERANCE_NS,
        require_image: bool = True,
        pseudo_label_dir: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        self._reader = None
        self.cloud_topic, self.image_topic = cloud_topic, image_topic
        if pseudo_label_dir is None:
            beside = bag_pseudo_label_dir(self.path)
            pseudo_label_dir = beside if beside.is_dir() else None
        self.pseudo_label_dir = None if pseudo_label_dir is None else Path(pseudo_label_dir)
        from elite_ros.bag import bag_info

        topics = bag_info(self.path)
        if cloud_topic not in topics:
            raise ValueError(f"{self.path}: no cloud topic {cloud_topic!r} (topics: {sorted(topics)})")
        has_camera = all(t in topics for t in (image_topic, camera_info_topic, tf_topic))
        if require_image and not has_camera:
            missing = [t for t in (image_topic, camera_info_topic, tf_topic) if t not in topics]
            raise ValueError(f"{self.path}: no camera data, missing topic(s) {missing} (topics: {sorted(topics)})")

        clouds, images, infos = [], [], []
        cloud_frame = camera_frame = None
        tree = TransformTree()
        wanted = [cloud_topic] + ([image_topic, camera_info_topic, tf_topic] if has_camera else [])
        last_record: dict[str, tuple[int, int]] = {}
        for message in iter_messages(self.path, topics=wanted):
            previous, count = last_record.get(message.topic, (None, 0))
            rank = count + 1 if previous == message.timestamp else 0
            last_record[message.topic] = (message.timestamp, rank)
            if message.topic == tf_topic:
                for transform in message.msg.transforms:
                    tree.add(transform_from_msg(transform))
                continue
            stamped = _Stamped(message.timestamp, stamp_ns(message.msg.header), rank)
            if message.topic == cloud_topic:
                clouds.append(stamped)
                cloud_frame = cloud_frame or message.msg.header.frame_id
            elif message.topic == image_topic:
                images.append(stamped)
                camera_frame = camera_frame or message.msg.header.frame_id
            else:
                infos.append((stamped.stamp_ns, np.asarray(message.msg.p, dtype=np.float64).reshape(3, 4)))
        if not clouds:
            raise ValueError(f"{self.path}: topic {cloud_topic!r} holds no message")

        self._clouds = clouds
        self._images = sorted(images, key=lambda s: s.stamp_ns)
        pair = nearest_within(
            np.array([c.stamp_ns for c in clouds], np.int64),
            np.array([s.stamp_ns for s in self._images], np.int64),
            tolerance_ns,
        )
        self._projections: list[np.ndarray | None] = [None] * len(self._images)
        if has_camera and self._images:
            if not infos:
                raise ValueError(f"{self.path}: topic {camera_info_topic!r} holds no CameraInfo")
            try:
                velo_to_camera = tree.lookup(camera_frame, cloud_frame)
            except LookupError as error:
                raise ValueError(f"{self.path}: {tf_topic}: no transform from the cloud frame {cloud_frame!r} "
                                 f"to the camera frame {camera_frame!r}: {error}") from None
            info_stamps = np.array([s for s, _ in infos], np.int64)
            order = np.argsort(info_stamps, kind="stable")
            nearest_info = nearest_within(
                np.array([s.stamp_ns for s in self._images], np.int64), info_stamps[order], np.iinfo(np.int64).max
            )
            self._projections = [projection_from(infos[order[i]][1], velo_to_camera) for i in nearest_info]
        keep = pair >= 0 if require_image else np.ones(len(clouds), bool)
        self.cloud_numbers = np.flatnonzero(keep)
        self._pairs = pair[keep]
        self.num_clouds = len(clouds)
        self.velo_frame, self.camera_frame = cloud_frame, camera_frame

    def __len__(self) -> int:
        return len(self.cloud_numbers)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reader"] = None  # an open file handle does not cross processes; each worker opens its own
        return state

    def _rosbag2_reader(self):
        """This process's open rosbag2 reader (opening one costs two YAML parses: keep it), or None."""
        reader = self.__dict__.get("_reader")
        if reader is not None and reader[0] == os.getpid():
            return reader[1]
        if detect_format(self.path) == "ros1":
            return None
        opened = Rosbag2Reader(self.path)
        opened.open()
        self._reader = (os.getpid(), opened)
        return opened

    def close(self) -> None:
        """Close this process's open reader (reopened on the next read)."""
        reader, self._reader = self.__dict__.get("_reader"), None
        if reader is not None and reader[0] == os.getpid():
            reader[1].close()

    def _read(self, topic: str, stamped: _Stamped):
        reader = self._rosbag2_reader()
        if reader is not None:  # fast path: seek through the chunk index of the open bag
            connections = [c for c in reader.connections if c.topic == topic]
            raws = reader.messages(connections, start=stamped.record_ns, stop=stamped.record_ns + 1)
            for rank, (connection, _, raw) in enumerate(raws):
                if rank == stamped.rank:
                    return TYPESTORE.deserialize_cdr(raw, connection.msgtype)
        else:  # ROS 1: through elite_ros.bag, which converts the messages to ROS 2 classes
            messages = iter_messages(self.path, topics=[topic], start=stamped.record_ns, stop=stamped.record_ns + 1)
            for rank, message in enumerate(messages):
                if rank == stamped.rank:
                    return message.msg
        raise ValueError(f"{self.path}: topic {topic!r}: message at {stamped.record_ns} ns vanished")

    def read_cloud(self, index: int):
        """The raw PointCloud2 of frame `index`."""
        return self._read(self.cloud_topic, self._clouds[self.cloud_numbers[index]])

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames in {self.path}")
        index %= len(self)
        number = int(self.cloud_numbers[index])
        cloud_stamp = self._clouds[number]
        cloud = self._read(self.cloud_topic, cloud_stamp)
        scan = decode(cloud)
        intensity = scan.intensity if scan.intensity is not None else np.zeros(len(scan.xyz), np.float32)
        points = np.concatenate([scan.xyz, intensity[:, None]], axis=1).astype(np.float32)
        labels = None
        structured = read_points(cloud)
        if structured.dtype.names and LABEL_FIELD in structured.dtype.names:
            labels = structured[LABEL_FIELD][scan.index].astype(np.uint32)
        image = projection = pseudo = None
        image_number = int(self._pairs[index])
        if image_number >= 0:
            image = image_to_rgb(self._read(self.image_topic, self._images[image_number]))
            projection = self._projections[image_number]
        frame_id = f"{number:06d}"
        if image is not None and self.pseudo_label_dir is not None:
            path = self.pseudo_label_dir / f"{frame_id}.npz"
            pseudo = load_pseudo_labels(path) if path.is_file() else None
        return Frame(frame_id=frame_id, points=points, labels=labels, image=image, projection=projection,
                     pseudo_labels=pseudo, timestamp_ns=cloud_stamp.stamp_ns)
