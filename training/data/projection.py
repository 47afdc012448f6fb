"""LiDAR -> camera projection (KITTI conventions), shared by the datasets, SAM-PLG and the synthetic world.

The reference (docs/reference.md §2 step 3) keeps points with x > 0 in the LiDAR frame, projects
(x, y, z, 1) with P2 · [R0_rect ·] Tr, divides by depth and keeps 0 < u < W and 0 < v < H (strict);
pixel coordinates are truncated to int64 and returned as (row, col).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Projection:
    """Points of a scan that land inside an image.

    Attributes:
        index: (M,) int64 index of each projected point in the input point array.
        pixels: (M, 2) int64 (row, col) pixel of each projected point, truncated towards zero.
        uv: (M, 2) float64 sub-pixel (u = column, v = row) coordinates.
        depth: (M,) float64 depth along the camera's optical axis, metres.
    """

    index: np.ndarray
    pixels: np.ndarray
    uv: np.ndarray
    depth: np.ndarray


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


def project_points(xyz: np.ndarray, projection: np.ndarray, width: int, height: int) -> Projection:
    """Project LiDAR points (N, 3) metres with a (3, 4) matrix into a width x height image.

    Keeps points in front of the sensor (x > 0, as the reference does) whose pixel lies strictly
    inside the image (0 < u < width, 0 < v < height).
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(f"xyz must be (N, 3), got {xyz.shape}")
    projection = np.asarray(projection, dtype=np.float64)
    if projection.shape != (3, 4):
        raise ValueError(f"projection must be (3, 4), got {projection.shape}")
    front = np.flatnonzero(xyz[:, 0] > 0)
    cam = xyz[front, :3] @ projection[:, :3].T + projection[:, 3]
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = cam[:, :2] / depth[:, None]
    inside = (depth > 0) & (uv[:, 0] > 0) & (uv[:, 0] < width) & (uv[:, 1] > 0) & (uv[:, 1] < height)
    uv = uv[inside]
    pixels = uv[:, ::-1].astype(np.int64)  # (row, col), truncation as in the reference
    return Projection(index=front[inside].astype(np.int64), pixels=pixels, uv=uv, depth=depth[inside])
