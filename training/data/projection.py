"""LiDAR -> camera projection (KITTI conventions), shared by the datasets, SAM-PLG and the synthetic world.

The reference (docs/reference.md §2 step 3) keeps points with x > 0 in the LiDAR frame, projects
(x, y, z, 1) with P2 · [R0_rect ·] Tr, divides by depth and keeps 0 < u < W and 0 < v < H (strict);
pixel coordinates are truncated to int64 and returned as (row, col).
"""
from __future__ import annotations

import numpy as np

# The projection rule and its result are the runtime's (the fusion student projects on the car too): one home.
from elite_ros.camera import Projection, project_points

__all__ = ["Projection", "project_points", "projection_matrix", "to_homogeneous"]


def to_homogeneous(matrix: np.ndarray) -> np.ndarray:
    """A (3, 4) or (4, 4) rigid/projective matrix -> (4, 4) float64 (bottom row 0 0 0 1 added)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape == (4, 4):
        return matrix
    if matrix.shape != (3, 4) and matrix.shape != (3, 3):
        raise ValueError(f"expected a (3, 4), (3, 3) or (4, 4) matrix, got {matrix.shape}")
    out = np.eye(4)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


def projection_matrix(p2: np.ndarray, tr_velo_to_cam: np.ndarray, r0_rect: np.ndarray | None = None) -> np.ndarray:
    """Camera matrix P2 (3, 4) · [R0_rect (3, 3)] · Tr (3, 4) -> the (3, 4) LiDAR-to-pixel projection.

    The odometry benchmark's `Tr` already includes rectification (no R0_rect); the object benchmark
    gives `R0_rect` and `Tr_velo_to_cam` separately.
    """
    p2 = np.asarray(p2, dtype=np.float64).reshape(3, 4)
    rect = np.eye(4) if r0_rect is None else to_homogeneous(np.asarray(r0_rect).reshape(3, 3))
    return p2 @ rect @ to_homogeneous(np.asarray(tr_velo_to_cam).reshape(-1, 4))
