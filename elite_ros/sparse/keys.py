"""The linear cell key: one int64 per (batch, z, y, x) cell of a (Z, Y, X) grid, ordered like those rows.

``key = ((batch * Z + z) * Y + y) * X + x``. The voxeliser groups points into voxels by it, the native
kernel maps find neighbours by it, and the segmenter's point cap groups points per cell by it: one
definition for all of them.
"""
from __future__ import annotations

import torch
from torch import Tensor


def linear_key(batch: Tensor | int, z: Tensor, y: Tensor, x: Tensor, spatial_shape: tuple[int, int, int]) -> Tensor:
    """(N,) int64 key of the cells (batch, z, y, x), each an (N,) integer tensor (batch may be an int)."""
    size_z, size_y, size_x = spatial_shape
    return ((batch * size_z + z) * size_y + y) * size_x + x


def coords_key(coords: Tensor, spatial_shape: tuple[int, int, int]) -> Tensor:
    """(M,) int64 key of each row of (M, 4) integer coords [batch, z, y, x]."""
    c = coords.long()
    return linear_key(c[:, 0], c[:, 1], c[:, 2], c[:, 3], spatial_shape)


def decode_key(key: Tensor, spatial_shape: tuple[int, int, int]) -> Tensor:
    """(M,) int64 keys -> (M, 4) int32 coords [batch, z, y, x]: the inverse of :func:`coords_key`."""
    size_z, size_y, size_x = spatial_shape
    x = key % size_x
    rest = key // size_x
    y = rest % size_y
    rest = rest // size_y
    z = rest % size_z
    batch = rest // size_z
    return torch.stack([batch, z, y, x], dim=1).to(torch.int32)
