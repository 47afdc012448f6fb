"""Write a kitti2bag-style ROS 1 bag with `rosbags.rosbag1.Writer` (shared by test_convert / test_bag_dataset).

Same topics, frames and layouts as kitti2bag (tomas789/kitti2bag): `/kitti/velo/pointcloud` PointCloud2
with FLOAT32 fields x, y, z, i (frame `velo_link`); `/kitti/camera_color_left/image_raw` bgr8 Image and
`/kitti/camera_color_left/camera_info` (P = P_rect_02, frame `camera_color_left`); `/tf_static` with the
tree base_link -> imu_link -> {velo_link, camera_color_left}, each camera TF to its own optical frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag1 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from elite_ros.cloud import POINTCLOUD2_TYPE
from elite_ros_training.data.transforms import (
    invert_rigid,
    matrix_from_quaternion,
    nearest_rotation,
    quaternion_from_matrix,
    rigid_matrix,
)


@dataclass
class Kitti2BagContent:
    scans: list[np.ndarray]  # (N, 4) float32 written as x, y, z, i
    images_rgb: list[np.ndarray]  # (H, W, 3) uint8, written as bgr8
    stamps_ns: list[int]
    p2: np.ndarray  # (3, 4)
    velo_to_camera2: np.ndarray  # (4, 4) what the TF chain encodes (exact rotation)


def _store():
    store = get_typestore(Stores.ROS1_NOETIC)
    store.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
    return store


def write_kitti2bag(path: Path, scans: list[np.ndarray], p2: np.ndarray, velo_to_camera2: np.ndarray,
                    image_size: tuple[int, int] = (1242, 375), period_ns: int = 103_000_000) -> Kitti2BagContent:
    store = _store()
    t = store.types
    width, height = image_size
    rng = np.random.default_rng(0)
    start = 1_317_000_000 * 10**9  # a 2011 drive, as KITTI raw

    def header(seq: int, stamp: int, frame: str):
        time = t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
        return t["std_msgs/msg/Header"](seq=seq, stamp=time, frame_id=frame)

    def transform(parent: str, child: str, matrix: np.ndarray, stamp: int):
        q = quaternion_from_matrix(matrix[:3, :3])
        return t["geometry_msgs/msg/TransformStamped"](
            header=header(0, stamp, parent), child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=matrix[0, 3], y=matrix[1, 3], z=matrix[2, 3]),
                rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))

    velo_to_camera2 = rigid_matrix(nearest_rotation(velo_to_camera2[:3, :3]), velo_to_camera2[:3, 3])
    # like KITTI's Tr_imu_to_velo: a rotation of about 1 degree and an 80 cm offset
    imu_to_velo = rigid_matrix(matrix_from_quaternion([-0.0074, -0.0010, 0.0004, 1.0]), [-0.81, 0.32, -0.80])
    pose_velo_in_imu = invert_rigid(imu_to_velo)
    pose_cam_in_imu = pose_velo_in_imu @ invert_rigid(velo_to_camera2)
    base_to_imu = rigid_matrix(np.eye(3), [-2.71 / 2 - 0.05, 0.32, 0.93])  # kitti2bag's base_link offset
    content = Kitti2BagContent([], [], [], np.asarray(p2, float), velo_to_camera2)

    with Writer(path) as writer:
        conns = {
            "tf": writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=store),
            "cloud": writer.add_connection("/kitti/velo/pointcloud", POINTCLOUD2_TYPE, typestore=store),
            "image": writer.add_connection("/kitti/camera_color_left/image_raw", "sensor_msgs/msg/Image",
                                           typestore=store),
            "info": writer.add_connection("/kitti/camera_color_left/camera_info", "sensor_msgs/msg/CameraInfo",
                                          typestore=store),
        }
        for i, scan in enumerate(scans):
            stamp = start + i * period_ns
            tf = t["tf2_msgs/msg/TFMessage"](transforms=[
                transform("base_link", "imu_link", base_to_imu, stamp),
                transform("imu_link", "velo_link", pose_velo_in_imu, stamp),
                transform("imu_link", "camera_color_left", pose_cam_in_imu, stamp),
            ])
            writer.write(conns["tf"], stamp, store.serialize_ros1(tf, "tf2_msgs/msg/TFMessage"))
            scan = np.ascontiguousarray(scan, dtype=np.float32)
            fields = [t["sensor_msgs/msg/PointField"](name=n, offset=4 * k, datatype=7, count=1)
                      for k, n in enumerate("xyzi")]
            cloud = t[POINTCLOUD2_TYPE](
                header=header(i, stamp + 2_000_000, "velo_link"), height=1, width=len(scan), fields=fields,
                is_bigendian=False, point_step=16, row_step=16 * len(scan), data=scan.view(np.uint8).reshape(-1),
                is_dense=True)
            writer.write(conns["cloud"], stamp + 2_000_000, store.serialize_ros1(cloud, POINTCLOUD2_TYPE))
            rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = t["sensor_msgs/msg/Image"](header=header(i, stamp, "camera_color_left"), height=height, width=width,
                                               encoding="bgr8", is_bigendian=0, step=3 * width,
                                               data=np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1))
            info = t["sensor_msgs/msg/CameraInfo"](
                header=header(i, stamp, "camera_color_left"), height=height, width=width, distortion_model="plumb_bob",
                D=np.array([-0.37, 0.2, 0.0, 0.0, -0.07]), K=np.asarray(p2, float)[:, :3].reshape(-1).copy(),
                R=np.eye(3).reshape(-1), P=np.asarray(p2, float).reshape(-1).copy(), binning_x=0, binning_y=0,
                roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            writer.write(conns["image"], stamp, store.serialize_ros1(image, "sensor_msgs/msg/Image"))
            writer.write(conns["info"], stamp, store.serialize_ros1(info, "sensor_msgs/msg/CameraInfo"))
            content.scans.append(scan)
            content.images_rgb.append(rgb)
            content.stamps_ns.append(stamp)
    return content
