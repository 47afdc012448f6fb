"""A KITTI / SemanticKITTI sequence folder, or a kitti2bag ROS 1 bag, -> a rosbag2 (mcap) in the layout the
bag dataset reads (the command line is `elite-ros-train convert`, training/commands/convert.py).

Output layout (kitti2bag's topic and frame names):

| topic | type | content |
|---|---|---|
| `/kitti/velo/pointcloud` | PointCloud2 | x, y, z, intensity FLOAT32 (+ `label` UINT32 raw value), frame `velo_link` |
| `/kitti/camera_color_left/image_raw` | Image | rgb8 left colour image, frame `camera_color_left` |
| `/kitti/camera_color_left/camera_info` | CameraInfo | P = P2, K = P2[:, :3], R = I, D = 0 (rectified image) |
| `/tf_static` | tf2_msgs/TFMessage | `velo_link` -> `camera_color_left` |

Projection convention (as kitti2bag): the TF goes to camera 2's own optical frame, and the LiDAR ->
pixel matrix is K · T with K = P[:, :3]. KITTI's `Tr` maps to the rectified *reference* camera (cam 0)
and P2's 4th column holds camera 2's offset from it, so the written TF is `[I | K^-1 P2[:, 3]] · [R0 ·] Tr`
(`Calibration.velo_to_camera2`) and K · T = P2 · [R0 ·] Tr. The rotation is stored as a unit quaternion
of the nearest exact rotation (KITTI's matrices are orthonormal to ~1e-7 only).

Stamps: record time = header stamp = `start_time + times.txt` (folder), or the input's header stamps
(bag). Outputs are never overwritten and appear atomically (`elite_ros.bag.BagWriter`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elite_ros.bag import TYPESTORE, BagWriter, detect_format, iter_messages
from elite_ros.cloud import POINTCLOUD2_TYPE, decode, make_cloud, read_points
from elite_ros_training.data.bag_dataset import (
    CAMERA_INFO_TOPIC,
    CLOUD_TOPIC,
    IMAGE_TOPIC,
    LABEL_FIELD,
    SYNC_TOLERANCE_NS,
    TF_STATIC_TOPIC,
    image_to_rgb,
    stamp_ns,
)
from elite_ros_training.data.semantickitti import SequenceFolder, read_bin, read_image, read_label
from elite_ros_training.data.transforms import (
    TransformTree,
    invert_rigid,
    nearest_rotation,
    quaternion_from_matrix,
    rigid_matrix,
    transform_from_msg,
)

VELO_FRAME = "velo_link"  # kitti2bag's frame names
CAMERA_FRAME = "camera_color_left"
DEFAULT_PERIOD_S = 0.1  # 10 Hz (HDL-64E), used when a folder has no times.txt

_T = TYPESTORE.types
IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"


@dataclass(frozen=True)
class Topics:
    """Topic names read (bag input) and written (output)."""

    cloud: str = CLOUD_TOPIC
    image: str = IMAGE_TOPIC
    camera_info: str = CAMERA_INFO_TOPIC
    tf_static: str = TF_STATIC_TOPIC


@dataclass
class ConvertReport:
    """What a conversion wrote."""

    output: Path
    frames: int = 0
    images: int = 0
    labelled: int = 0
    notes: list[str] = field(default_factory=list)


# -------------------------------------------------------------------------------------- messages
def header(stamp: int, frame_id: str):
    """A Kilted `std_msgs/Header` at `stamp` ns."""
    seconds, nanoseconds = divmod(int(stamp), 1_000_000_000)
    time = _T["builtin_interfaces/msg/Time"](sec=seconds, nanosec=nanoseconds)
    return _T["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def image_message(rgb: np.ndarray, stamp: int, frame_id: str = CAMERA_FRAME):
    """(H, W, 3) uint8 RGB -> `sensor_msgs/Image` rgb8."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return _T[IMAGE_TYPE](header=header(stamp, frame_id), height=height, width=width, encoding="rgb8",
                          is_bigendian=0, step=3 * width, data=rgb.reshape(-1))


def camera_info_message(p: np.ndarray, width: int, height: int, stamp: int, frame_id: str = CAMERA_FRAME):
    """`sensor_msgs/CameraInfo` of a rectified image: P (3, 4), K = P[:, :3], R = I, no distortion."""
    p = np.asarray(p, dtype=np.float64).reshape(3, 4)
    roi = _T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _T[CAMERA_INFO_TYPE](
        header=header(stamp, frame_id), height=int(height), width=int(width), distortion_model="plumb_bob",
        d=np.zeros(5), k=p[:, :3].reshape(-1).copy(), r=np.eye(3).reshape(-1), p=p.reshape(-1).copy(),
        binning_x=0, binning_y=0, roi=roi,
    )


def tf_static_message(velo_to_camera: np.ndarray, stamp: int, velo_frame: str = VELO_FRAME,
                      camera_frame: str = CAMERA_FRAME):
    """`tf2_msgs/TFMessage` with the camera's pose in the LiDAR frame (parent `velo_frame`).

    `velo_to_camera` (4, 4) maps LiDAR coordinates to camera coordinates (KITTI `Tr`); its rotation is
    replaced by the nearest exact rotation (see `transforms.quaternion_from_matrix`).
    """
    exact = rigid_matrix(nearest_rotation(velo_to_camera[:3, :3]), velo_to_camera[:3, 3])
    pose = invert_rigid(exact)  # camera -> velo coordinates = the camera's pose in the LiDAR frame
    qx, qy, qz, qw = quaternion_from_matrix(pose[:3, :3])
    tx, ty, tz = pose[:3, 3]
    transform = _T["geometry_msgs/msg/TransformStamped"](
        header=header(stamp, velo_frame), child_frame_id=camera_frame,
        transform=_T["geometry_msgs/msg/Transform"](
            translation=_T["geometry_msgs/msg/Vector3"](x=float(tx), y=float(ty), z=float(tz)),
            rotation=_T["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz), w=float(qw)),
        ),
    )
    return _T[TF_TYPE](transforms=[transform])


def cloud_message(points: np.ndarray, labels: np.ndarray | None, stamp: int, frame_id: str = VELO_FRAME):
    """(N, 4) x, y, z, intensity (+ (N,) uint32 raw labels) -> PointCloud2 (FLOAT32 x4 [+ UINT32 label])."""
    points = np.asarray(points, dtype=np.float32)
    fields = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2], "intensity": points[:, 3]}
    if labels is not None:
        fields[LABEL_FIELD] = np.asarray(labels, dtype=np.uint32)
    return make_cloud(fields, header(stamp, frame_id))


# ---------------------------------------------------------------------------------------- folder
def convert_folder(src: str | Path, out: str | Path, *, topics: Topics = Topics(), start_time_ns: int = 0,
                   storage: str = "mcap", max_frames: int | None = None, progress: bool = True) -> ConvertReport:
    """A KITTI odometry / SemanticKITTI sequence folder (or KITTI object folder) -> rosbag2."""
    from tqdm import tqdm

    folder = SequenceFolder(src, load_images=False, load_pseudo_labels=False)
    report = ConvertReport(output=Path(out))
    count = len(folder) if max_frames is None else min(max_frames, len(folder))
    calib0 = folder.calibration(0)
    with_images = folder.has_images and calib0 is not None
    if not folder.has_images:
        report.notes.append(f"{folder.root}: no image_2/*.png for every scan: writing points only")
    elif calib0 is None:
        report.notes.append(f"{folder.root}: no calibration (calib.txt / calib/): writing points only")
    if not folder.has_labels:
        report.notes.append(f"{folder.root}: no labels/*.label for every scan: clouds carry no 'label' field")
    if folder.times is None:
        report.notes.append(f"{folder.root}: no times.txt: stamps at {1 / DEFAULT_PERIOD_S:g} Hz")
    if folder.per_frame_calib and calib0 is not None:
        report.notes.append(f"{folder.root}: per-frame calibration: /tf_static holds frame 0's (object frames)")

    def stamp_of(index: int) -> int:
        offset = folder.timestamp_ns(index)
        return start_time_ns + (offset if offset is not None else int(round(index * DEFAULT_PERIOD_S * 1e9)))

    with BagWriter(out, storage=storage) as writer:
        if calib0 is not None:  # the LiDAR -> camera relation is written even when images are missing
            writer.write(topics.tf_static, TF_TYPE, stamp_of(0), tf_static_message(calib0.velo_to_camera2, stamp_of(0)))
        for index in tqdm(range(count), desc=f"convert {folder.root.name}", unit="frame", disable=not progress):
            stamp = stamp_of(index)
            points = read_bin(folder.path("velodyne", index))
            labels = read_label(folder.path("labels", index), len(points)) if folder.has_labels else None
            if with_images:
                rgb = read_image(folder.path("image_2", index))
                calib = folder.calibration(index)
                writer.write(topics.camera_info, CAMERA_INFO_TYPE, stamp,
                             camera_info_message(calib.p2, rgb.shape[1], rgb.shape[0], stamp))
                writer.write(topics.image, IMAGE_TYPE, stamp, image_message(rgb, stamp))
                report.images += 1
            writer.write(topics.cloud, POINTCLOUD2_TYPE, stamp, cloud_message(points, labels, stamp))
            report.frames += 1
            report.labelled += labels is not None
    return report


# ------------------------------------------------------------------------------------------- bag
def _velo_to_camera(src: Path, topics: Topics) -> np.ndarray:
    """LiDAR -> image optical frame (4, 4) from the bag's static TF (frames from the first cloud / image)."""
    tree = TransformTree()
    for message in iter_messages(src, topics=[topics.tf_static]):
        for transform in message.msg.transforms:
            tree.add(transform_from_msg(transform))
    cloud = next(iter(iter_messages(src, topics=[topics.cloud])), None)
    image = next(iter(iter_messages(src, topics=[topics.image])), None)
    if cloud is None or image is None:
        raise ValueError(f"{src}: no message on {topics.cloud!r} or {topics.image!r}")
    velo_frame, image_frame = cloud.msg.header.frame_id, image.msg.header.frame_id
    try:
        return tree.lookup(image_frame, velo_frame)
    except LookupError as error:
        raise ValueError(f"{src}: {topics.tf_static}: no transform {velo_frame!r} -> {image_frame!r}: "
                         f"{error}") from None


def convert_bag(src: str | Path, out: str | Path, *, topics: Topics = Topics(), storage: str = "mcap",
                max_frames: int | None = None, progress: bool = True) -> ConvertReport:
    """A kitti2bag-style bag (ROS 1 or rosbag2) -> the rosbag2 layout of this module.

    Clouds keep x, y, z, the intensity field (`intensity`, `reflectivity` or kitti2bag's `i`) and a
    `label` field if present; images become rgb8; CameraInfo keeps P; the static TF tree is reduced to
    one `velo_link` -> `camera_color_left` transform (the chain from the cloud's to the image's frame).
    """
    from tqdm import tqdm

    from elite_ros.bag import bag_info

    src = Path(src)
    available = bag_info(src)
    if topics.cloud not in available:
        raise ValueError(f"{src}: no cloud topic {topics.cloud!r} (topics: {sorted(available)}); set --cloud-topic")
    report = ConvertReport(output=Path(out))
    camera_topics = [topics.image, topics.camera_info, topics.tf_static]
    with_images = all(t in available for t in camera_topics)
    velo_to_camera = None
    if with_images:
        velo_to_camera = _velo_to_camera(src, topics)
    else:
        missing = [t for t in camera_topics if t not in available]
        report.notes.append(f"{src}: no camera topic(s) {missing}: writing points only")
    total = available[topics.cloud][1]
    if max_frames is not None:
        total = min(total, max_frames)
    wanted = [topics.cloud] + (camera_topics[:2] if with_images else [])

    with BagWriter(out, storage=storage) as writer, tqdm(total=total, desc=f"convert {src.name}", unit="frame",
                                                         disable=not progress) as bar:
        tf_written, last_cloud_stamp = False, None
        for message in iter_messages(src, topics=wanted):
            stamp = stamp_ns(message.msg.header) or message.timestamp
            if report.frames >= total and (last_cloud_stamp is None or message.topic == topics.cloud
                                          or stamp > last_cloud_stamp + SYNC_TOLERANCE_NS):
                break  # --max-frames reached: keep only the camera messages that belong to the last cloud
            if with_images and not tf_written:
                writer.write(topics.tf_static, TF_TYPE, stamp, tf_static_message(velo_to_camera, stamp))
                tf_written = True
            if message.topic == topics.cloud:
                last_cloud_stamp = stamp
                scan = decode(message.msg)
                intensity = scan.intensity if scan.intensity is not None else np.zeros(len(scan.xyz), np.float32)
                structured = read_points(message.msg)
                labels = None
                if structured.dtype.names and LABEL_FIELD in structured.dtype.names:
                    labels = structured[LABEL_FIELD][scan.index].astype(np.uint32)
                    report.labelled += 1
                points = np.concatenate([scan.xyz, intensity[:, None]], axis=1)
                writer.write(topics.cloud, POINTCLOUD2_TYPE, stamp, cloud_message(points, labels, stamp))
                report.frames += 1
                bar.update()
            elif message.topic == topics.image:
                writer.write(topics.image, IMAGE_TYPE, stamp, image_message(image_to_rgb(message.msg), stamp))
                report.images += 1
            else:
                msg = message.msg
                writer.write(topics.camera_info, CAMERA_INFO_TYPE, stamp,
                             camera_info_message(np.asarray(msg.p), msg.width, msg.height, stamp))
    return report


def convert(src: str | Path, out: str | Path, **options) -> ConvertReport:
    """Folder (has `velodyne/`) -> `convert_folder`; anything else is read as a bag -> `convert_bag`."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"no such input: {src}")
    if Path(out).exists():
        raise FileExistsError(f"output exists, refusing to overwrite it: {out}")
    if (src / "velodyne").is_dir():
        return convert_folder(src, out, **options)
    detect_format(src)
    start_time_ns = options.pop("start_time_ns", 0)
    report = convert_bag(src, out, **options)
    if start_time_ns:
        report.notes.append("--start-time ignored: a bag keeps its own header stamps")
    return report
