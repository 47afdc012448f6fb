"""KITTI / SemanticKITTI raw files, shared by bag replay (runtime) and the training readers.

Formats (KITTI devkit / SemanticKITTI API): velodyne `.bin` = float32 (N, 4) x, y, z (metres),
intensity (0..1); `.label` = uint32 (N,) semantic | instance << 16; `times.txt` = one time in seconds
per line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

POINT_DIMS = 4  # x, y, z, intensity (KITTI velodyne .bin)


class KittiFormatError(ValueError):
    """A KITTI / SemanticKITTI file that cannot be read; the message names the file and the problem."""


def read_bin(path: str | Path) -> np.ndarray:
    """A velodyne `.bin` -> (N, 4) float32 x, y, z (metres), intensity."""
    path = Path(path)
    size = path.stat().st_size
    if size % (4 * POINT_DIMS):
        raise KittiFormatError(f"{path}: {size} bytes is not a multiple of 16 (16-byte points: float32 x, y, z, "
                               "intensity)")
    return np.fromfile(path, dtype="<f4").reshape(-1, POINT_DIMS)


def read_label(path: str | Path, num_points: int | None = None) -> np.ndarray:
    """A SemanticKITTI `.label` -> (N,) uint32 (semantic = value & 0xFFFF, instance = value >> 16)."""
    path = Path(path)
    if path.stat().st_size % 4:
        raise KittiFormatError(f"{path}: {path.stat().st_size} bytes is not a multiple of 4 (uint32 per point)")
    labels = np.fromfile(path, dtype="<u4")
    if num_points is not None and len(labels) != num_points:
        raise KittiFormatError(f"{path}: {len(labels)} labels for a scan of {num_points} points")
    return labels


def read_times(path: str | Path) -> np.ndarray:
    """`times.txt` -> (F,) float64 seconds since the start of the sequence."""
    path = Path(path)
    try:
        return np.array([float(line) for line in path.read_text().split()], dtype=np.float64)
    except ValueError as error:
        raise KittiFormatError(f"{path}: {error}") from None
