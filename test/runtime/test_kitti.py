"""KITTI raw files (elite_ros/kitti.py) on the real fixtures, and broken files named in the error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elite_ros.kitti import KittiFormatError, read_bin, read_label, read_times


def test_real_scans_and_labels(data_dir: Path):
    points = read_bin(data_dir / "kitti_odometry/seq00/000000.bin")
    assert points.shape == (124_668, 4) and points.dtype == np.float32
    scan = data_dir / "semantickitti/spvnas_000000"
    labels = read_label(scan / "000000.label", len(read_bin(scan / "000000.bin")))
    assert labels.shape == (123_389,) and labels.dtype == np.uint32


def test_broken_files_are_named(tmp_path: Path, data_dir: Path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\0" * 20)
    with pytest.raises(KittiFormatError, match="bad.bin: 20 bytes is not a multiple of 16"):
        read_bin(bad)
    with pytest.raises(KittiFormatError, match="labels for a scan of 7 points"):
        read_label(data_dir / "semantickitti/spvnas_000000/000000.label", 7)
    times = tmp_path / "times.txt"
    times.write_text("0.0\n0.1\n")
    np.testing.assert_allclose(read_times(times), [0.0, 0.1])
    times.write_text("0.0\nten\n")
    with pytest.raises(KittiFormatError, match="times.txt"):
        read_times(times)
