"""`elite-ros-train convert`: KITTI folders and kitti2bag ROS 1 bags -> rosbag2, read back losslessly."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
from kitti2bag_fixture import write_kitti2bag
from PIL import Image

from elite_ros.bag import bag_info, detect_format, iter_messages
from elite_ros.cloud import read_points
from elite_ros.command import EXIT_USAGE, run_command
from elite_ros_training.commands import convert as convert_command
from elite_ros_training.data import convert as convert_module
from elite_ros_training.data.bag_dataset import BagFrames, stamp_ns
from elite_ros_training.data.convert import convert, convert_bag
from elite_ros_training.data.semantickitti import read_bin, read_calib, read_label
from elite_ros_training.data.transforms import TransformTree, nearest_rotation, transform_from_msg

CLOUD, IMAGE, INFO, TF = ("/kitti/velo/pointcloud", "/kitti/camera_color_left/image_raw",
                          "/kitti/camera_color_left/camera_info", "/tf_static")
SEQ00_SIZE = (1241, 376)  # KITTI odometry seq 00 image size


def _seq00_folder(tmp_path: Path, data_dir: Path, *, images: bool) -> Path:
    """seq 00 frames 0 and 1 (symlinks) + calib.txt + times.txt (+ placeholder grey images: none are shipped)."""
    seq = tmp_path / "00"
    (seq / "velodyne").mkdir(parents=True)
    for i in range(2):
        os.symlink(data_dir / "kitti_odometry" / "seq00" / f"{i:06d}.bin", seq / "velodyne" / f"{i:06d}.bin")
    os.symlink(data_dir / "kitti_odometry" / "seq00" / "calib.txt", seq / "calib.txt")
    (seq / "times.txt").write_text("0.000000e+00\n1.037359e-01\n")
    if images:
        (seq / "image_2").mkdir()
        for i in range(2):
            Image.new("RGB", SEQ00_SIZE, (90 + i, 100, 110)).save(seq / "image_2" / f"{i:06d}.png")
    return seq


def test_seq00_round_trip_is_lossless(tmp_path: Path, data_dir: Path) -> None:
    seq = _seq00_folder(tmp_path, data_dir, images=True)
    out = tmp_path / "seq00_bag"
    report = convert(seq, out, start_time_ns=1_000_000_000, progress=False)
    assert (report.frames, report.images, report.labelled) == (2, 2, 0)
    assert detect_format(out) == "mcap"
    assert bag_info(out) == {CLOUD: ("sensor_msgs/msg/PointCloud2", 2), IMAGE: ("sensor_msgs/msg/Image", 2),
                             INFO: ("sensor_msgs/msg/CameraInfo", 2), TF: ("tf2_msgs/msg/TFMessage", 1)}
    calib = read_calib(seq / "calib.txt")
    clouds, tree, infos = [], TransformTree(), []
    for message in iter_messages(out):
        if message.topic == CLOUD:
            clouds.append(message)
        elif message.topic == TF:
            for transform in message.msg.transforms:
                tree.add(transform_from_msg(transform))
        elif message.topic == INFO:
            infos.append(message.msg)
    for i, message in enumerate(clouds):
        original = read_bin(seq / "velodyne" / f"{i:06d}.bin")
        points = read_points(message.msg)
        assert points.dtype.names == ("x", "y", "z", "intensity")
        assert message.msg.header.frame_id == "velo_link"
        for k, name in enumerate(points.dtype.names):  # bytes equal, not just close
            assert points[name].tobytes() == np.ascontiguousarray(original[:, k]).tobytes()
        assert message.timestamp == stamp_ns(message.msg.header) == 1_000_000_000 + [0, 103_735_900][i]
    # CameraInfo: P = P2 and K = P2[:, :3] exactly; TF: K · T = P2 · Tr
    for info in infos:
        np.testing.assert_allclose(np.reshape(info.p, (3, 4)), calib.p2, rtol=0, atol=1e-9)
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), calib.p2[:, :3], rtol=0, atol=1e-9)
        assert (info.width, info.height) == SEQ00_SIZE
    velo_to_camera = tree.lookup("camera_color_left", "velo_link")
    # Tr is a rotation only to 9e-8 (printed digits): the TF holds its nearest exact rotation
    expected = calib.velo_to_camera2.copy()
    expected[:3, :3] = nearest_rotation(calib.tr[:3, :3])
    np.testing.assert_allclose(velo_to_camera, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(velo_to_camera[:3], calib.velo_to_camera2[:3], rtol=0, atol=1e-7)
    # Tr itself: undo camera 2's offset (K^-1 P2[:, 3]) from the reference camera
    offset = np.linalg.solve(calib.p2[:, :3], calib.p2[:, 3])
    recovered_tr = velo_to_camera.copy()
    recovered_tr[:3, 3] -= offset
    np.testing.assert_allclose(recovered_tr[:3, 3], calib.tr[:3, 3], rtol=0, atol=1e-9)
    np.testing.assert_allclose(recovered_tr[:3, :3], nearest_rotation(calib.tr[:3, :3]), rtol=0, atol=1e-9)
    # and the bag dataset projects the real scan as P2 · Tr does (sub-millipixel)
    frame = BagFrames(out)[0]
    assert frame.image.shape == (376, 1241, 3)
    xyz1 = np.c_[frame.points[:, :3], np.ones(len(frame.points))]
    uvw_bag, uvw_calib = xyz1 @ frame.projection.T, xyz1 @ calib.projection.T
    front = uvw_calib[:, 2] > 1
    np.testing.assert_allclose(uvw_bag[front, :2] / uvw_bag[front, 2:], uvw_calib[front, :2] / uvw_calib[front, 2:],
                               atol=1e-3)


def test_labels_round_trip_through_a_converted_bag(tmp_path: Path, data_dir: Path) -> None:
    scan = data_dir / "semantickitti" / "spvnas_000000"
    seq = tmp_path / "seq"
    for sub in ("velodyne", "labels"):
        (seq / sub).mkdir(parents=True)
    os.symlink(scan / "000000.bin", seq / "velodyne" / "000000.bin")
    os.symlink(scan / "000000.label", seq / "labels" / "000000.label")
    report = convert(seq, tmp_path / "labelled", progress=False)
    assert report.labelled == 1 and any("no image_2" in note for note in report.notes)
    message = next(iter(iter_messages(tmp_path / "labelled", topics=[CLOUD])))
    points = read_points(message.msg)
    assert points.dtype.names == ("x", "y", "z", "intensity", "label")
    assert points.dtype["label"] == np.dtype("<u4")
    labels = read_label(scan / "000000.label")
    np.testing.assert_array_equal(points["label"], labels)  # raw values, instance bits included
    assert (labels >> 16).max() > 0
    frame = BagFrames(tmp_path / "labelled", require_image=False)[0]
    np.testing.assert_array_equal(frame.labels, labels)
    np.testing.assert_array_equal(frame.points, read_bin(scan / "000000.bin"))
    assert frame.image is None


def test_folder_without_images_or_calibration_converts_points_only(tmp_path: Path, data_dir: Path) -> None:
    seq = _seq00_folder(tmp_path, data_dir, images=False)
    os.unlink(seq / "calib.txt")
    os.unlink(seq / "times.txt")
    report = convert(seq, tmp_path / "points_only", progress=False)
    assert report.frames == 2 and report.images == 0
    assert any("no image_2" in n for n in report.notes) and any("no times.txt" in n for n in report.notes)
    assert set(bag_info(tmp_path / "points_only")) == {CLOUD}
    stamps = [m.timestamp for m in iter_messages(tmp_path / "points_only")]
    assert stamps == [0, 100_000_000]  # 10 Hz without times.txt


def test_refuses_to_overwrite_and_leaves_nothing_on_failure(tmp_path: Path, data_dir: Path) -> None:
    seq = _seq00_folder(tmp_path, data_dir, images=False)
    out = tmp_path / "exists"
    out.mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        convert(seq, out, progress=False)
    assert list(out.iterdir()) == []
    # a broken second scan: the error names it and no partial output remains
    broken = seq / "velodyne" / "000001.bin"
    os.unlink(broken)
    broken.write_bytes(b"\0" * 18)
    with pytest.raises(ValueError, match="000001.bin"):
        convert(seq, tmp_path / "never", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00", "exists"]


def test_kitti2bag_ros1_bag_converts_to_the_same_layout(tmp_path: Path, data_dir: Path) -> None:
    calib = read_calib(data_dir / "kitti_odometry" / "seq00" / "calib.txt")
    scans = [read_bin(data_dir / "kitti_odometry" / "seq00" / f"{i:06d}.bin")[::50] for i in range(2)]
    source = tmp_path / "kitti_2011_09_26_drive_0001_synced.bag"
    content = write_kitti2bag(source, scans, calib.p2, calib.velo_to_camera2)
    assert detect_format(source) == "ros1"
    out = tmp_path / "converted"
    report = convert(source, out, progress=False)
    assert (report.frames, report.images, report.labelled) == (2, 2, 0)
    assert bag_info(out) == {CLOUD: ("sensor_msgs/msg/PointCloud2", 2), IMAGE: ("sensor_msgs/msg/Image", 2),
                             INFO: ("sensor_msgs/msg/CameraInfo", 2), TF: ("tf2_msgs/msg/TFMessage", 1)}
    clouds = [m for m in iter_messages(out, topics=[CLOUD])]
    for message, scan, stamp in zip(clouds, content.scans, content.stamps_ns):
        points = read_points(message.msg)
        assert points.dtype.names == ("x", "y", "z", "intensity")  # kitti2bag's `i` renamed
        np.testing.assert_array_equal(np.stack([points[n] for n in points.dtype.names], axis=1), scan)
        assert message.timestamp == stamp + 2_000_000  # the cloud's header stamp
    images = [m.msg for m in iter_messages(out, topics=[IMAGE])]
    assert all(m.encoding == "rgb8" for m in images)
    np.testing.assert_array_equal(np.asarray(images[1].data).reshape(375, 1242, 3), content.images_rgb[1])
    # the TF tree base -> imu -> {velo, camera} collapses to one edge that projects as P2 · Tr
    frames = BagFrames(out)
    assert len(frames) == 2
    np.testing.assert_allclose(frames[0].projection, calib.p2[:, :3] @ content.velo_to_camera2[:3], atol=1e-6)
    np.testing.assert_allclose(frames[0].projection, calib.projection, rtol=1e-5, atol=1e-4)


def test_kitti2bag_custom_topics_and_missing_topic(tmp_path: Path, data_dir: Path) -> None:
    calib = read_calib(data_dir / "kitti_odometry" / "seq00" / "calib.txt")
    scans = [read_bin(data_dir / "kitti_odometry" / "seq00" / "000000.bin")[::200]]
    source = tmp_path / "drive.bag"
    write_kitti2bag(source, scans, calib.p2, calib.velo_to_camera2, image_size=(64, 32))
    with pytest.raises(ValueError, match="no cloud topic '/velodyne_points'"):
        convert_bag(source, tmp_path / "a", topics=convert_module.Topics(cloud="/velodyne_points"), progress=False)
    rectified = convert_module.Topics(image="/kitti/camera_color_left/image_rect")
    report = convert_bag(source, tmp_path / "b", topics=rectified, progress=False)
    assert report.images == 0 and any("points only" in n for n in report.notes)
    assert not (tmp_path / "a").exists()
    write_kitti2bag(tmp_path / "three.bag", scans * 3, calib.p2, calib.velo_to_camera2, image_size=(64, 32))
    report = convert(tmp_path / "three.bag", tmp_path / "two", max_frames=2, progress=False)
    assert (report.frames, report.images) == (2, 2)  # the third frame's image is not written either
    assert bag_info(tmp_path / "two")[IMAGE] == ("sensor_msgs/msg/Image", 2)


def test_cli(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="elite-ros-train")
    convert_command.add_parser(parser.add_subparsers(dest="command"))
    seq = _seq00_folder(tmp_path, data_dir, images=False)
    args = parser.parse_args(["convert", str(seq), str(tmp_path / "out"), "--no-progress", "--start-time", "2.5"])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().err
    assert next(iter(iter_messages(tmp_path / "out"))).timestamp == 2_500_000_000
    with pytest.raises(SystemExit) as exit_info:  # exists now
        run_command(args)
    assert exit_info.value.code == EXIT_USAGE == 2
    assert "refusing to overwrite" in capsys.readouterr().err
