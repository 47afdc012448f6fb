"""Rigid transforms for TF messages: rotation matrix <-> quaternion, and frame lookups in a static TF tree.

The runtime's (the bag tools read the camera's static TF of converted KITTI bags for the fusion student);
the training side re-exports it (`elite_ros_training.data.transforms`). No ROS import.

TF convention (REP 105 / tf2): a `TransformStamped` with ``header.frame_id = parent`` and
``child_frame_id = child`` is the pose of the child in the parent, i.e. the (4, 4) matrix mapping
child-frame coordinates into parent-frame coordinates. Quaternions are (x, y, z, w), as in
`geometry_msgs/Quaternion`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

ROTATION_TOLERANCE = 1e-5  # largest |R R^T - I| / |det R - 1| accepted as "a rotation printed with rounding"


def nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The rotation (3, 3) closest (Frobenius) to a nearly orthonormal `matrix`: U V^T of its SVD.

    Raises ValueError when `matrix` is further than `ROTATION_TOLERANCE` from a proper rotation.
    """
    r = np.asarray(matrix, dtype=np.float64)[:3, :3]
    error = max(abs(np.linalg.det(r) - 1.0), np.abs(r @ r.T - np.eye(3)).max())
    if not error <= ROTATION_TOLERANCE:
        raise ValueError(f"not a rotation matrix (|R R^T - I| or |det - 1| = {error:.3g} > {ROTATION_TOLERANCE})")
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> unit quaternion (4,) float64 (x, y, z, w) with w >= 0.

    Calibration matrices are printed with limited digits and are rotations only to ~1e-7 (KITTI seq 00's
    `Tr`: |R R^T - I| = 9.4e-8), so the input is first replaced by its nearest rotation (polar
    decomposition, `nearest_rotation`); the quaternion reproduces that one to ~1e-15. A matrix further
    than `ROTATION_TOLERANCE` from a rotation raises ValueError. Shepperd's method: the largest of
    (trace, diagonal entries) is the pivot, for stability.
    """
    r = nearest_rotation(rotation)
    trace = np.trace(r)
    candidates = (trace, r[0, 0], r[1, 1], r[2, 2])
    pivot = int(np.argmax(candidates))
    if pivot == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    elif pivot == 1:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif pivot == 2:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
    unit = np.array(q) / np.linalg.norm(q)
    return -unit if unit[3] < 0 else unit


def matrix_from_quaternion(quaternion: np.ndarray) -> np.ndarray:
    """Quaternion (4,) (x, y, z, w), normalised here -> (3, 3) float64 rotation matrix."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rigid_matrix(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation + (3,) translation -> (4, 4) homogeneous transform."""
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = translation
    return out


def invert_rigid(transform: np.ndarray) -> np.ndarray:
    """Inverse of a (4, 4) rigid transform (R^T, -R^T t) without a general matrix inverse."""
    r, t = transform[:3, :3], transform[:3, 3]
    return rigid_matrix(r.T, -r.T @ t)


@dataclass(frozen=True)
class FrameTransform:
    """One TF edge: `matrix` (4, 4) maps `child` coordinates into `parent` coordinates."""

    parent: str
    child: str
    matrix: np.ndarray


def transform_from_msg(msg) -> FrameTransform:
    """A `geometry_msgs/TransformStamped` (ROS 1 or ROS 2, any duck-typed class) -> `FrameTransform`."""
    t, q = msg.transform.translation, msg.transform.rotation
    matrix = rigid_matrix(matrix_from_quaternion(np.array([q.x, q.y, q.z, q.w])), np.array([t.x, t.y, t.z]))
    return FrameTransform(parent=msg.header.frame_id.lstrip("/"), child=msg.child_frame_id.lstrip("/"), matrix=matrix)


class TransformTree:
    """Static transforms between named frames; `lookup(target, source)` chains them in either direction."""

    def __init__(self, transforms: list[FrameTransform] | tuple[FrameTransform, ...] = ()) -> None:
        self._edges: dict[str, dict[str, np.ndarray]] = {}
        for transform in transforms:
            self.add(transform)

    def add(self, transform: FrameTransform) -> None:
        """Add (or replace) an edge; the inverse direction is stored too. A leading '/' (tf1) is ignored."""
        parent, child = transform.parent.lstrip("/"), transform.child.lstrip("/")
        self._edges.setdefault(parent, {})[child] = transform.matrix
        self._edges.setdefault(child, {})[parent] = invert_rigid(transform.matrix)

    @property
    def frames(self) -> list[str]:
        return sorted(self._edges)

    def lookup(self, target: str, source: str) -> np.ndarray:
        """(4, 4) matrix mapping `source`-frame coordinates into `target`-frame coordinates."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        if source not in self._edges or target not in self._edges:
            missing = [f for f in (source, target) if f not in self._edges]
            raise LookupError(f"no transform for frame(s) {missing}; known frames: {self.frames}")
        # breadth-first search from source; each step maps coordinates one frame further
        found = {source: np.eye(4)}
        queue = deque([source])
        while queue:
            frame = queue.popleft()
            for neighbour in self._edges[frame]:
                if neighbour in found:
                    continue
                # edges[frame][neighbour] maps neighbour -> frame; we need frame -> neighbour
                found[neighbour] = self._edges[neighbour][frame] @ found[frame]
                if neighbour == target:
                    return found[neighbour]
                queue.append(neighbour)
        raise LookupError(f"frames '{source}' and '{target}' are not connected; known frames: {self.frames}")
