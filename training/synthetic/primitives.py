"""Analytic primitives of the synthetic world and their vectorised ray intersections.

Every solid is one of three shapes, stored as a struct of arrays (:class:`Primitives`):

- ``BOX``: a box rotated by ``yaw`` about +z; ``size`` = half extents (x, y, z) in its own frame.
- ``CYLINDER``: a vertical cylinder; ``size`` = (radius, radius, half height); side and top cap.
- ``ELLIPSOID``: an ellipsoid rotated by ``yaw`` about +z; ``size`` = radii (x, y, z).

All coordinates are world metres; rays are ``origin (3,) + t * direction (n, 3)`` with unit directions,
so ``t`` is a distance in metres. A miss is ``t = inf``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
_EPS = 1e-6  # metres: hits closer than this to the ray origin are ignored


@dataclass(frozen=True)
class Primitives:
    """P primitives (struct of arrays).

    Attributes:
        kind: (P,) int8, BOX / CYLINDER / ELLIPSOID.
        center: (P, 3) float64 world position, metres.
        size: (P, 3) float64 half extents / (radius, radius, half height) / radii, metres.
        yaw: (P,) float64 rotation about +z, radians.
        raw_label: (P,) uint32 raw SemanticKITTI semantic id (``elite_ros.labels.RAW_NAMES``).
        instance: (P,) uint16 instance id (0 for stuff classes); parts of one object share it.
        material: (P,) uint8 material id (``materials.Material``).
        colour: (P, 3) float32 base albedo in 0..1 (used by materials that take a per-object colour).
    """

    kind: np.ndarray
    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    raw_label: np.ndarray
    instance: np.ndarray
    material: np.ndarray
    colour: np.ndarray
    aabb_min: np.ndarray = field(init=False, repr=False)
    aabb_max: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        c, s = np.abs(np.cos(self.yaw)), np.abs(np.sin(self.yaw))
        hx, hy, hz = self.size[:, 0], self.size[:, 1], self.size[:, 2]
        half = np.stack([c * hx + s * hy, s * hx + c * hy, hz], axis=1)
        round_xy = self.kind != BOX  # cylinders/ellipsoids: the circumscribed square is enough
        r = np.maximum(hx, hy)
        half[round_xy, 0] = r[round_xy]
        half[round_xy, 1] = r[round_xy]
        object.__setattr__(self, "aabb_min", self.center - half)
        object.__setattr__(self, "aabb_max", self.center + half)

    def __len__(self) -> int:
        return int(self.kind.shape[0])


class PrimitiveBuilder:
    """Collects primitives one by one, then :meth:`build` makes the arrays."""

    def __init__(self) -> None:
        self._rows: list[tuple] = []

    def add(self, kind: int, center, size, yaw: float, raw_label: int, instance: int, material: int,
            colour=(0.5, 0.5, 0.5)) -> None:
        size = tuple(float(v) for v in size)
        if min(size) <= 0:
            raise ValueError(f"primitive size must be positive, got {size}")
        self._rows.append((kind, tuple(float(v) for v in center), size, float(yaw), int(raw_label),
                           int(instance), int(material), tuple(float(v) for v in colour)))

    def box(self, center, half, yaw: float, raw_label: int, instance: int, material: int, colour=(0.5, 0.5, 0.5)):
        self.add(BOX, center, half, yaw, raw_label, instance, material, colour)

    def cylinder(self, x: float, y: float, z0: float, z1: float, radius: float, raw_label: int, instance: int,
                 material: int, colour=(0.5, 0.5, 0.5)):
        self.add(CYLINDER, (x, y, 0.5 * (z0 + z1)), (radius, radius, 0.5 * (z1 - z0)), 0.0, raw_label, instance,
                 material, colour)

    def ellipsoid(self, center, radii, yaw: float, raw_label: int, instance: int, material: int,
                  colour=(0.5, 0.5, 0.5)):
        self.add(ELLIPSOID, center, radii, yaw, raw_label, instance, material, colour)

    def build(self) -> Primitives:
        if not self._rows:
            empty3 = np.zeros((0, 3))
            return Primitives(np.zeros(0, np.int8), empty3, empty3, np.zeros(0), np.zeros(0, np.uint32),
                              np.zeros(0, np.uint16), np.zeros(0, np.uint8), empty3.astype(np.float32))
        kind, center, size, yaw, raw, inst, mat, colour = zip(*self._rows)
        return Primitives(
            kind=np.array(kind, np.int8), center=np.array(center, np.float64), size=np.array(size, np.float64),
            yaw=np.array(yaw, np.float64), raw_label=np.array(raw, np.uint32), instance=np.array(inst, np.uint16),
            material=np.array(mat, np.uint8), colour=np.array(colour, np.float32),
        )


def _to_local(points: np.ndarray, center: np.ndarray, yaw: np.ndarray | float) -> np.ndarray:
    """World points (n, 3) -> the primitive's frame (rotate by -yaw about +z around `center`)."""
    d = points - center
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], d[..., 2]], axis=-1)


def _rotate_dirs(dirs: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2]], axis=1)


def intersect(prims: Primitives, index: int, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance along each ray (n, 3) from `origin` (3,) to primitive `index`; inf where missed."""
    kind = prims.kind[index]
    center, size, yaw = prims.center[index], prims.size[index], prims.yaw[index]
    o = _to_local(origin[None, :], center, yaw)[0]
    d = _rotate_dirs(dirs, yaw) if yaw != 0.0 else dirs
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == BOX:
            return _box(o, d, size)
        if kind == CYLINDER:
            return _cylinder(o, d, size)
        return _ellipsoid(o, d, size)


def _box(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> np.ndarray:
    inv = 1.0 / d
    t1 = (-half - o) * inv
    t2 = (half - o) * inv
    near = np.minimum(t1, t2).max(axis=1)
    far = np.maximum(t1, t2).min(axis=1)
    hit = (near <= far) & (near > _EPS)
    return np.where(hit, near, np.inf)


def _cylinder(o: np.ndarray, d: np.ndarray, size: np.ndarray) -> np.ndarray:
    r, h = size[0], size[2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - r * r
    disc = b * b - 4.0 * a * c
    t_side = (-b - np.sqrt(disc)) / (2.0 * a)
    z = o[2] + t_side * d[:, 2]
    side = (disc >= 0) & (a > 0) & (t_side > _EPS) & (np.abs(z) <= h)
    t = np.where(side, t_side, np.inf)
    if o[2] > h:  # the top cap is only visible from above
        t_cap = (h - o[2]) / d[:, 2]
        px, py = o[0] + t_cap * d[:, 0], o[1] + t_cap * d[:, 1]
        cap = (d[:, 2] < 0) & (px * px + py * py <= r * r) & (t_cap > _EPS)
        t = np.where(cap & (t_cap < t), t_cap, t)
    return t


def _ellipsoid(o: np.ndarray, d: np.ndarray, radii: np.ndarray) -> np.ndarray:
    os_, ds = o / radii, d / radii
    a = (ds * ds).sum(axis=1)
    b = 2.0 * (ds @ os_)
    c = float(os_ @ os_) - 1.0
    disc = b * b - 4.0 * a * c
    t = (-b - np.sqrt(disc)) / (2.0 * a)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def surface(prims: Primitives, index: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local coordinates and world normals of hit points on primitives.

    Args:
        index: (n,) primitive index of each hit.
        points: (n, 3) world hit points, metres.

    Returns:
        local: (n, 3) the hit in the primitive's frame (origin at its centre), metres.
        normal: (n, 3) unit outward world normal.
    """
    kind, size, yaw = prims.kind[index], prims.size[index], prims.yaw[index]
    local = _to_local(points, prims.center[index], yaw)
    normal = np.zeros_like(local)
    box = kind == BOX
    if box.any():
        ratio = np.abs(local[box]) / size[box]
        axis = ratio.argmax(axis=1)
        n = np.zeros((int(box.sum()), 3))
        n[np.arange(n.shape[0]), axis] = np.sign(local[box][np.arange(n.shape[0]), axis])
        normal[box] = n
    cyl = kind == CYLINDER
    if cyl.any():
        q, s = local[cyl], size[cyl]
        top = q[:, 2] >= s[:, 2] - 1e-4
        n = np.stack([q[:, 0], q[:, 1], np.zeros(q.shape[0])], axis=1)
        n[top] = (0.0, 0.0, 1.0)
        normal[cyl] = n
    ell = kind == ELLIPSOID
    if ell.any():
        normal[ell] = local[ell] / size[ell] ** 2
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    c, s = np.cos(yaw), np.sin(yaw)  # back to the world frame
    world = np.stack([c * normal[:, 0] - s * normal[:, 1], s * normal[:, 0] + c * normal[:, 1], normal[:, 2]], 1)
    return local, world
