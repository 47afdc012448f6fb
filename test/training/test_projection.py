"""LiDAR -> pixel projection: geometry on hand-made cases (the real KITTI frame is in test_semantickitti)."""
from __future__ import annotations

import numpy as np
import pytest

from elite_ros_training.data.projection import project_points, projection_matrix, to_homogeneous

# A camera looking along LiDAR +x: camera x = -lidar y, camera y = -lidar z, camera z = lidar x.
VELO_TO_CAM = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]], dtype=np.float64)
K = np.array([[100.0, 0, 50, 0], [0, 100.0, 25, 0], [0, 0, 1, 0]])


def test_points_project_to_their_pixels():
    proj = projection_matrix(K, VELO_TO_CAM)
    xyz = np.array([[10.0, 0, 0], [10.0, -1.0, 0.5], [-5.0, 0, 0], [10.0, 10.0, 0], [1.0, 0.0, 0.0]])
    p = project_points(xyz, proj, width=100, height=50)
    # point 0 -> centre (u=50, v=25); point 1 -> u = 50 + 100*1/10 = 60, v = 25 - 100*0.5/10 = 20
    # point 2 is behind, point 3 leaves the image (u = -50), point 4 is at the centre again
    assert p.index.tolist() == [0, 1, 4]
    np.testing.assert_allclose(p.uv, [[50, 25], [60, 20], [50, 25]])
    assert p.pixels.tolist() == [[25, 50], [20, 60], [25, 50]]
    np.testing.assert_allclose(p.depth, [10, 10, 1])


def test_bounds_are_strict():
    proj = projection_matrix(K, VELO_TO_CAM)
    # u == 0 exactly (left edge) is outside, as in the reference
    xyz = np.array([[1.0, 0.5, 0.0]])
    assert project_points(xyz, proj, 100, 50).index.size == 0


def test_rectification_is_applied_between_camera_and_lidar():
    r0 = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # a 90 degree roll of the camera frame
    with_r0 = projection_matrix(K, VELO_TO_CAM, r0)
    np.testing.assert_allclose(with_r0, K @ to_homogeneous(r0) @ to_homogeneous(VELO_TO_CAM))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="xyz"):
        project_points(np.zeros(3), np.zeros((3, 4)), 10, 10)
    with pytest.raises(ValueError, match="projection"):
        project_points(np.zeros((2, 3)), np.zeros((4, 4)), 10, 10)
