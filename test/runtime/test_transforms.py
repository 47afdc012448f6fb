"""Quaternions and static TF lookups used by the converter and the bag dataset."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elite_ros.transforms import (
    FrameTransform,
    TransformTree,
    invert_rigid,
    matrix_from_quaternion,
    nearest_rotation,
    quaternion_from_matrix,
    rigid_matrix,
    transform_from_msg,
)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1, 1), min_size=3, max_size=3).filter(lambda v: np.linalg.norm(v) > 1e-3),
    st.floats(-np.pi, np.pi),
)
def test_quaternion_round_trip(axis: list[float], angle: float) -> None:
    rotation = _rotation(np.array(axis), angle)
    q = quaternion_from_matrix(rotation)
    assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
    np.testing.assert_allclose(matrix_from_quaternion(q), rotation, atol=1e-12)


def test_known_quaternions() -> None:
    np.testing.assert_allclose(quaternion_from_matrix(np.eye(3)), [0, 0, 0, 1])
    rz90 = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(quaternion_from_matrix(rz90), [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-15)
    rx180 = np.diag([1.0, -1.0, -1.0])  # trace -1: a diagonal pivot branch
    np.testing.assert_allclose(np.abs(quaternion_from_matrix(rx180)), [1, 0, 0, 0], atol=1e-15)


def test_nearly_orthonormal_matrices_use_the_nearest_rotation() -> None:
    rotation = _rotation(np.array([0.3, -0.2, 0.9]), 1.1)
    noisy = rotation + 5e-8 * np.random.default_rng(0).normal(size=(3, 3))  # like KITTI's printed Tr
    exact = nearest_rotation(noisy)
    np.testing.assert_allclose(exact @ exact.T, np.eye(3), atol=1e-14)
    np.testing.assert_allclose(matrix_from_quaternion(quaternion_from_matrix(noisy)), exact, atol=1e-12)
    with pytest.raises(ValueError, match="not a rotation"):
        quaternion_from_matrix(np.diag([1.0, 1.0, -1.0]))  # a reflection
    with pytest.raises(ValueError, match="not a rotation"):
        quaternion_from_matrix(2 * np.eye(3))


def test_tree_chains_edges_in_both_directions() -> None:
    rng = np.random.default_rng(3)
    poses = {name: rigid_matrix(_rotation(rng.normal(size=3), rng.uniform(-3, 3)), rng.normal(size=3))
             for name in ("imu", "velo", "cam")}
    # kitti2bag-like tree: base -> imu -> {velo, cam}; each matrix maps child coordinates to parent ones
    tree = TransformTree([
        FrameTransform("base", "imu", poses["imu"]),
        FrameTransform("imu", "velo", poses["velo"]),
        FrameTransform("imu", "/cam", poses["cam"]),
    ])
    expected = invert_rigid(poses["cam"]) @ poses["velo"]  # velo -> imu -> cam
    np.testing.assert_allclose(tree.lookup("cam", "velo"), expected, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("velo", "cam"), invert_rigid(expected), atol=1e-12)
    np.testing.assert_allclose(tree.lookup("base", "velo"), poses["imu"] @ poses["velo"], atol=1e-12)
    np.testing.assert_array_equal(tree.lookup("imu", "imu"), np.eye(4))
    tree.add(FrameTransform("odom", "map", np.eye(4)))
    with pytest.raises(LookupError, match="not connected"):
        tree.lookup("map", "velo")
    with pytest.raises(LookupError, match="no transform for frame"):
        tree.lookup("nowhere", "velo")


def test_transform_from_a_message() -> None:
    q = quaternion_from_matrix(_rotation(np.array([1.0, 2, 3]), 0.4))
    msg = SimpleNamespace(
        header=SimpleNamespace(frame_id="/velo_link"), child_frame_id="camera",
        transform=SimpleNamespace(translation=SimpleNamespace(x=1.0, y=2.0, z=3.0),
                                  rotation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3])),
    )
    edge = transform_from_msg(msg)
    assert (edge.parent, edge.child) == ("velo_link", "camera")
    np.testing.assert_allclose(edge.matrix[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(edge.matrix[:3, :3], _rotation(np.array([1.0, 2, 3]), 0.4), atol=1e-12)
