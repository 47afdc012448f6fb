"""Synchronised frames from bags: pairing by header stamp, projection from CameraInfo + TF, labels."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from kitti2bag_fixture import write_kitti2bag
from torch.utils.data import DataLoader

from elite_ros.bag import BagWriter
from elite_ros.cloud import POINTCLOUD2_TYPE
from elite_ros_training.data.bag_dataset import BagFrames, image_to_rgb, nearest_within
from elite_ros_training.data.collate import Batch, collate
from elite_ros_training.data.convert import (
    camera_info_message,
    cloud_message,
    convert,
    image_message,
    tf_static_message,
)
from elite_ros_training.data.dataset import PointImageDataset, open_frames
from elite_ros_training.data.semantickitti import SequenceFolder, read_bin, read_calib, save_pseudo_labels
from elite_ros_training.data.transforms import rigid_matrix

CLOUD, IMAGE, INFO, TF = ("/kitti/velo/pointcloud", "/kitti/camera_color_left/image_raw",
                          "/kitti/camera_color_left/camera_info", "/tf_static")
MS = 1_000_000


def test_nearest_within() -> None:
    stamps = np.array([100, 200, 300])
    np.testing.assert_array_equal(nearest_within(np.array([90, 149, 151, 260, 400, 0]), stamps, 50),
                                  [0, 0, 1, 2, -1, -1])
    np.testing.assert_array_equal(nearest_within(np.array([120]), np.array([100]), 50), [0])
    np.testing.assert_array_equal(nearest_within(np.array([120]), np.array([], np.int64), 50), [-1])


def test_image_encodings() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    msg = image_message(rgb, 0)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    padded = np.zeros((4, 20), np.uint8)  # step 20 > 3 * 5: row padding
    padded[:, :15] = rgb[:, :, ::-1].reshape(4, 15)
    msg.encoding, msg.step, msg.data = "bgr8", 20, padded.reshape(-1)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    msg.encoding, msg.step, msg.data = "mono8", 5, rgb[:, :, 0].copy().reshape(-1)
    np.testing.assert_array_equal(image_to_rgb(msg), np.repeat(rgb[:, :, :1], 3, axis=2))
    msg.encoding = "16UC1"
    with pytest.raises(ValueError, match="encoding '16UC1'"):
        image_to_rgb(msg)


@pytest.fixture()
def hand_made_bag(tmp_path: Path) -> tuple[Path, dict]:
    """5 clouds at 10 Hz (record time 5 ms after the stamp, clouds 3 and 4 recorded together); images
    20 ms after each cloud's stamp, except none for cloud 2 and one 70 ms late for cloud 3; a TF chain
    velo -> base_link -> camera."""
    rng = np.random.default_rng(0)
    start = 50 * 10**9
    p = np.array([[500.0, 0, 320, 30.0], [0, 500, 120, 0.2], [0, 0, 1, 0.003]])
    velo_in_base = rigid_matrix(np.eye(3), [0.3, 0.0, 1.7])
    camera_in_base = rigid_matrix(np.array([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]]), [0.5, 0.1, 1.6])
    truth = {"clouds": [], "images": {}, "p": p, "velo_to_camera": np.linalg.inv(camera_in_base) @ velo_in_base}
    path = tmp_path / "hand.mcap.d"
    with BagWriter(path) as writer:
        # TF in two messages: velo -> base, base -> camera (poses of the children in the parents)
        writer.write(TF, "tf2_msgs/msg/TFMessage", start, _tf("base_link", "velo_link", velo_in_base, start))
        writer.write(TF, "tf2_msgs/msg/TFMessage", start, _tf("base_link", "camera_color_left", camera_in_base, start))
        for i in range(5):
            stamp = start + i * 100 * MS
            record = stamp + 5 * MS if i < 4 else start + 3 * 100 * MS + 5 * MS  # cloud 4 recorded with cloud 3
            points = rng.uniform(-20, 20, (100 + i, 4)).astype(np.float32)
            labels = rng.integers(0, 1 << 20, len(points)).astype(np.uint32)
            if i == 0:
                points[7, :3] = np.nan  # a non-finite point is dropped with its label
            writer.write(CLOUD, POINTCLOUD2_TYPE, record, cloud_message(points, labels, stamp))
            truth["clouds"].append((points, labels))
            if i == 2:
                continue
            image_stamp = stamp + (70 if i == 3 else 20) * MS
            rgb = np.full((30, 40, 3), i * 10, np.uint8)
            writer.write(INFO, "sensor_msgs/msg/CameraInfo", image_stamp, camera_info_message(p, 40, 30, image_stamp))
            writer.write(IMAGE, "sensor_msgs/msg/Image", image_stamp, image_message(rgb, image_stamp))
            truth["images"][i] = rgb
    return path, truth


def _tf(parent: str, child: str, pose: np.ndarray, stamp: int):
    # tf_static_message takes the child->parent *coordinate* map's inverse: LiDAR -> camera coordinates
    return tf_static_message(np.linalg.inv(pose), stamp, velo_frame=parent, camera_frame=child)


def test_pairs_by_header_stamp_within_the_tolerance(hand_made_bag) -> None:
    path, truth = hand_made_bag
    frames = BagFrames(path)
    assert frames.num_clouds == 5 and len(frames) == 3  # cloud 2: no image; cloud 3: image 70 ms off
    assert [frames[i].frame_id for i in range(3)] == ["000000", "000001", "000004"]
    expected_projection = truth["p"][:, :3] @ truth["velo_to_camera"][:3]
    for i, number in enumerate([0, 1, 4]):
        frame = frames[i]
        points, labels = truth["clouds"][number]
        finite = np.isfinite(points[:, :3]).all(axis=1)
        np.testing.assert_array_equal(frame.points, points[finite])
        np.testing.assert_array_equal(frame.labels, labels[finite])
        np.testing.assert_array_equal(frame.image, truth["images"][number])
        np.testing.assert_allclose(frame.projection, expected_projection, atol=1e-9)
        assert frame.timestamp_ns == 50 * 10**9 + number * 100 * MS
    loose = BagFrames(path, tolerance_ns=100 * MS)
    assert len(loose) == 5
    np.testing.assert_array_equal(loose[2].image, truth["images"][1])  # 80 ms from image 1, 180 ms from 3
    np.testing.assert_array_equal(loose[3].image, truth["images"][3])
    lidar_only = BagFrames(path, require_image=False)
    assert len(lidar_only) == 5 and lidar_only[2].image is None and lidar_only[3].image is None


def test_bag_errors(hand_made_bag, tmp_path: Path) -> None:
    path, _ = hand_made_bag
    with pytest.raises(ValueError, match="no cloud topic '/points'"):
        BagFrames(path, cloud_topic="/points")
    with pytest.raises(ValueError, match=r"missing topic\(s\) \['/camera/image'\]"):
        BagFrames(path, image_topic="/camera/image")
    broken = tmp_path / "no_tf_link"
    with BagWriter(broken) as writer:
        writer.write(TF, "tf2_msgs/msg/TFMessage", 1, _tf("base_link", "lidar", np.eye(4), 1))
        writer.write(CLOUD, POINTCLOUD2_TYPE, 1, cloud_message(np.zeros((3, 4), np.float32), None, 1))
        writer.write(INFO, "sensor_msgs/msg/CameraInfo", 1, camera_info_message(np.eye(3, 4), 4, 4, 1))
        writer.write(IMAGE, "sensor_msgs/msg/Image", 1, image_message(np.zeros((4, 4, 3), np.uint8), 1))
    with pytest.raises(ValueError, match="no transform from the cloud frame 'velo_link' to the camera frame"):
        BagFrames(broken)


def test_dataset_from_a_converted_bag_matches_the_folder(tmp_path: Path, data_dir: Path) -> None:
    folder_path = data_dir / "kitti_object" / "training"
    convert(folder_path, tmp_path / "object", progress=False)
    from_bag = PointImageDataset(open_frames(tmp_path / "object"), train=False)
    from_folder = PointImageDataset(open_frames(folder_path), train=False)
    assert isinstance(from_folder.frames, SequenceFolder)
    a, b = from_bag[0], from_folder[0]
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.image, b.image)
    # the projection differs by the TF's exact rotation (1e-7): pixels agree except at truncation edges
    same = np.intersect1d(a.point_to_pixel, b.point_to_pixel)
    assert len(same) >= 0.999 * max(len(a.point_to_pixel), len(b.point_to_pixel))


def test_dataloader_with_workers_over_a_bag(tmp_path: Path, data_dir: Path) -> None:
    seq = tmp_path / "seq"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "image_2").mkdir()
    (seq / "calib").mkdir()
    src = data_dir / "kitti_object" / "training"
    for i in range(2):  # the object frame twice (per-frame calibration layout)
        os.symlink(src / "velodyne" / "000000.bin", seq / "velodyne" / f"{i:06d}.bin")
        os.symlink(src / "image_2" / "000000.png", seq / "image_2" / f"{i:06d}.png")
        os.symlink(src / "calib" / "000000.txt", seq / "calib" / f"{i:06d}.txt")
    convert(seq, tmp_path / "bag", progress=False)
    pseudo_dir = tmp_path / "plg"
    for i in range(2):
        save_pseudo_labels(pseudo_dir / f"{i:06d}.npz", np.full((2, 370, 1224), 3 + i, np.uint16))
    dataset = PointImageDataset(BagFrames(tmp_path / "bag", pseudo_label_dir=pseudo_dir), train=True, seed=1)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 1
    batch = batches[0]
    assert isinstance(batch, Batch) and batch.batch_size == 2
    assert batch.images.shape == (2, 3, 1024, 1024) and batch.image_size == (320, 1024)
    assert batch.pseudo_labels.shape == (2, 320, 1024)
    assert torch.equal(batch.pseudo_labels[1], torch.full((320, 1024), 4))
    assert batch.frame_ids == ["000000", "000001"]
    # the workers built exactly what the dataset builds in this process
    again = collate([dataset[0], dataset[1]])
    assert torch.equal(batch.points, again.points) and torch.equal(batch.images, again.images)


def test_reads_a_kitti2bag_ros1_bag_directly(tmp_path: Path, data_dir: Path) -> None:
    calib = read_calib(data_dir / "kitti_odometry" / "seq00" / "calib.txt")
    scans = [read_bin(data_dir / "kitti_odometry" / "seq00" / "000000.bin")]
    source = tmp_path / "kitti.bag"
    content = write_kitti2bag(source, scans, calib.p2, calib.velo_to_camera2)
    frames = BagFrames(source)
    frame = frames[0]
    np.testing.assert_array_equal(frame.points, scans[0])  # kitti2bag's `i` read as intensity
    np.testing.assert_array_equal(frame.image, content.images_rgb[0])  # bgr8 -> RGB
    np.testing.assert_allclose(frame.projection, calib.projection, rtol=1e-5, atol=1e-4)
    sample = PointImageDataset(frames, train=True)[0]
    assert sample.image.shape == (3, 320, 1024) and len(sample.pixels) > 10_000


def test_pseudo_labels_beside_the_bag_are_found(tmp_path: Path, data_dir: Path) -> None:
    convert(data_dir / "kitti_object" / "training", tmp_path / "obj", progress=False)
    assert BagFrames(tmp_path / "obj")[0].pseudo_labels is None
    save_pseudo_labels(tmp_path / "obj.image_2_labels" / "000000.npz", np.full((2, 370, 1224), 5, np.uint16))
    assert (BagFrames(tmp_path / "obj")[0].pseudo_labels == 5).all()
