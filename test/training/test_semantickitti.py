"""KITTI / SemanticKITTI readers on the real fixtures, and their errors on broken files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from elite_ros.labels import to_training_ids
from elite_ros_training.data.projection import project_points
from elite_ros_training.data.semantickitti import (
    KittiFormatError,
    SequenceFolder,
    image_size,
    load_pseudo_labels,
    pseudo_label_path,
    read_bin,
    read_calib,
    read_calib_file,
    read_label,
    read_poses,
    read_times,
    save_pseudo_labels,
    sequence_folders,
    write_bin,
)


def test_object_frame_projects_20285_points_through_the_readers(data_dir: Path) -> None:
    root = data_dir / "kitti_object" / "training"
    calib = read_calib(root / "calib" / "000000.txt")  # object format: P2, R0_rect, Tr_velo_to_cam
    assert calib.r0_rect is not None
    width, height = image_size(root / "image_2" / "000000.png")
    assert (width, height) == (1224, 370)
    points = read_bin(root / "velodyne" / "000000.bin")
    assert points.shape == (115_384, 4)
    projection = project_points(points[:, :3], calib.projection, width, height)
    assert len(projection.index) == 20_285  # data README
    # the same through the folder reader (per-frame calib/, image decoded)
    frame = SequenceFolder(root)[0]
    assert frame.image.shape == (370, 1224, 3) and frame.labels is None
    np.testing.assert_array_equal(frame.projection, calib.projection)


def test_odometry_calibration(data_dir: Path) -> None:
    calib = read_calib(data_dir / "kitti_odometry" / "seq00" / "calib.txt")
    assert calib.r0_rect is None
    assert calib.p2[0, 0] == 718.856  # data README
    np.testing.assert_array_equal(calib.velo_to_camera, calib.tr)
    entries = read_calib_file(data_dir / "kitti_odometry" / "seq00" / "calib.txt")
    assert sorted(entries) == ["P0", "P1", "P2", "P3", "Tr"]
    np.testing.assert_array_equal(calib.tr[:3].reshape(-1), entries["Tr"])
    # K2 · (LiDAR -> camera-2 optical frame) = P2 · Tr
    k2 = calib.p2[:, :3]
    np.testing.assert_allclose(k2 @ calib.velo_to_camera2[:3], calib.projection, atol=1e-9)


def test_real_scans_and_labels(data_dir: Path) -> None:
    assert read_bin(data_dir / "kitti_odometry" / "seq00" / "000000.bin").shape == (124_668, 4)
    scan = data_dir / "semantickitti" / "spvnas_000000"
    points = read_bin(scan / "000000.bin")
    labels = read_label(scan / "000000.label", len(points))
    assert len(labels) == 123_389
    assert set(np.unique(labels & 0xFFFF).tolist()) == {0, 1, 10, 11, 30, 40, 44, 48, 50, 51, 52, 70, 71, 72, 80, 81,
                                                        99, 252, 254}
    # the 50-point subset of seq 00 frame 0 lies in the full scan (to 1 mm)
    subset = read_bin(data_dir / "semantickitti" / "mmdet3d_seq00_000000_subset50" / "000000.bin")
    full = read_bin(data_dir / "kitti_odometry" / "seq00" / "000000.bin")
    nearest = np.array([np.abs(full[:, :3] - p[:3]).max(axis=1).min() for p in subset])
    assert nearest.max() < 1e-3
    with pytest.raises(KittiFormatError, match="labels for a scan of 5 points"):
        read_label(scan / "000000.label", 5)


@pytest.mark.parametrize("name, content, reader, message", [
    ("bad.bin", b"\0" * 20, read_bin, "bad.bin.*multiple of 16"),
    ("calib.txt", b"P0: 1 0 0 0 0 1 0 0 0 0 1 0\n", read_calib, "calib.txt: no 'P2'"),
    ("calib.txt", b"P2: 1 0 0\nTr: 1 0 0 0 0 1 0 0 0 0 1 0\n", read_calib, "'P2' has 3 values"),
    ("calib.txt", b"P2 1 0 0\n", read_calib_file, "calib.txt:1"),
    ("poses.txt", b"1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0\n", read_poses, "poses.txt:2"),
])
def test_broken_files_are_named(tmp_path: Path, name, content, reader, message) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(KittiFormatError, match=message):
        reader(path)


def test_a_folder_without_scans_is_named(tmp_path: Path) -> None:
    with pytest.raises(KittiFormatError, match="no 'velodyne' folder"):
        SequenceFolder(tmp_path)


def _sequence(tmp_path: Path, data_dir: Path, frames: int = 2) -> Path:
    """A SemanticKITTI sequence with the real labelled scan repeated, times, poses and pseudo labels."""
    seq = tmp_path / "sequences" / "08"
    for sub in ("velodyne", "labels"):
        (seq / sub).mkdir(parents=True)
    source = data_dir / "semantickitti" / "spvnas_000000"
    for i in range(frames):
        os.symlink(source / "000000.bin", seq / "velodyne" / f"{i:06d}.bin")
        os.symlink(source / "000000.label", seq / "labels" / f"{i:06d}.label")
    (seq / "times.txt").write_text("".join(f"{0.1 * i:e}\n" for i in range(frames)))
    (seq / "poses.txt").write_text("".join(f"1 0 0 {i} 0 1 0 0 0 0 1 0\n" for i in range(frames)))
    return seq


def test_sequence_folder_frames(tmp_path: Path, data_dir: Path) -> None:
    seq = _sequence(tmp_path, data_dir)
    folder = SequenceFolder(seq)
    assert len(folder) == 2 and folder.has_labels and not folder.has_images
    frame = folder[1]
    assert frame.frame_id == "000001" and frame.timestamp_ns == 100_000_000
    assert frame.image is None and frame.projection is None  # no calib.txt here
    assert frame.points.shape == (123_389, 4)
    assert set(np.unique(to_training_ids(frame.labels)).tolist()) <= set(range(20))
    np.testing.assert_array_equal(folder.poses[1][:3, 3], [1, 0, 0])
    np.testing.assert_allclose(read_times(seq / "times.txt"), [0.0, 0.1])
    assert [f.root.name for f in sequence_folders(tmp_path, ["08"])] == ["08"]
    with pytest.raises(IndexError):
        folder[2]
    (seq / "times.txt").write_text("0.0\n")
    with pytest.raises(KittiFormatError, match="times.txt: 1 entries for 2 scans"):
        SequenceFolder(seq)


def test_pseudo_labels_round_trip_and_are_read_with_the_frame(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "training"
    src = data_dir / "kitti_object" / "training"
    for sub in ("velodyne", "image_2", "calib"):
        (root / sub).mkdir(parents=True)
    os.symlink(src / "velodyne" / "000000.bin", root / "velodyne" / "000000.bin")
    os.symlink(src / "image_2" / "000000.png", root / "image_2" / "000000.png")
    os.symlink(src / "calib" / "000000.txt", root / "calib" / "000000.txt")
    labels = np.random.default_rng(0).integers(0, 20, size=(2, 370, 1224)).astype(np.uint16)
    path = pseudo_label_path(root, "000000")
    assert path == root / "image_2_labels" / "000000.npz"
    save_pseudo_labels(path, labels)
    assert sorted(p.name for p in path.parent.iterdir()) == ["000000.npz"]  # no temp file left
    np.testing.assert_array_equal(load_pseudo_labels(path), labels)
    np.testing.assert_array_equal(SequenceFolder(root)[0].pseudo_labels, labels)
    with pytest.raises(ValueError, match=r"\(2, H, W\) uint16"):
        save_pseudo_labels(path, labels.astype(np.int32))


def test_write_bin_round_trip(tmp_path: Path) -> None:
    points = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    write_bin(tmp_path / "a.bin", points)
    np.testing.assert_array_equal(read_bin(tmp_path / "a.bin"), points)
