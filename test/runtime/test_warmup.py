"""elite_ros.warmup: a warm-up scan the size and structure of a real LiDAR scan, inside the grid."""
from __future__ import annotations

import numpy as np
import torch

from elite_ros.voxel import VoxelConfig, in_range_mask
from elite_ros.warmup import AZIMUTHS, BEAMS, SENSOR_HEIGHT_M, lidar_like_scan


def test_a_real_scans_size_inside_the_grid():
    scan = lidar_like_scan()
    assert 100_000 <= scan.xyz.shape[0] <= BEAMS * AZIMUTHS  # a KITTI scan has ~120,000 points
    assert np.asarray(in_range_mask(scan.xyz)).all()
    assert scan.intensity is not None and 0 <= scan.intensity.min() and scan.intensity.max() <= 1
    ground = np.abs(scan.xyz[:, 2] + SENSOR_HEIGHT_M) < 0.1
    assert 0.3 < ground.mean() < 0.9  # rings on the road and walls beyond, as a street scan


def test_deterministic_and_clipped_to_a_smaller_grid():
    np.testing.assert_array_equal(lidar_like_scan().xyz, lidar_like_scan().xyz)
    small = VoxelConfig(min_bound=(-10.0, -10.0, -4.0), max_bound=(10.0, 10.0, 2.0))
    xyz = lidar_like_scan(small).xyz
    assert np.asarray(in_range_mask(xyz, small)).all() and np.abs(xyz[:, :2]).max() < 10.0


def test_the_segmenter_warms_up_on_it(monkeypatch):
    from elite_ros import segmenter as module
    from elite_ros.checkpoint import make_metadata
    from elite_ros.student import Student, StudentConfig

    seen = []
    original = module.Segmenter.predict

    def predict(self, scan):
        seen.append(scan.num_points)
        return original(self, scan)

    monkeypatch.setattr(module.Segmenter, "predict", predict)
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8))
    module.Segmenter(model, make_metadata(model), device=torch.device("cpu"))
    assert seen == [lidar_like_scan().num_points] * module.WARMUP_RUNS
