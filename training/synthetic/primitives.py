"""Analytic primitives of the synthetic world and their vectorised ray intersections.

Every solid is one of three shapes, stored as a struct of arrays (:class:`Primitives`):

- ``BOX``: a box; ``size`` = half extents (x, y, z) in its own frame.
- ``CYLINDER``: a cylinder along its own z axis; ``size`` = (radius, radius, half height); side and top cap.
- ``ELLIPSOID``: an ellipsoid; ``size`` = radii (x, y, z) in its own frame.

Each primitive has an orientation ``rotation`` (3, 3) (world-from-local; columns are the local axes in
the world). Most objects only turn about +z (``yaw``); ground slabs and vehicles on a slope also pitch
and roll. All coordinates are world metres; rays are ``origin (3,) + t * direction (n, 3)`` with unit
directions, so ``t`` is a distance in metres. A miss is ``t = inf``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .noise import hash01

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
_EPS = 1e-6  # metres: hits closer than this to the ray origin are ignored
NO_PAINT = (0.0, 0.0, 0.0, 0.0)


def rotation_matrix(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """(3, 3) world-from-local rotation: roll about x (left side up > 0), then pitch about y (nose up > 0),
    then yaw about z (counter-clockwise > 0), radians."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, -sp], [0.0, 1.0, 0.0], [sp, 0.0, cp]])  # nose (+x) up for pitch > 0
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])  # left side (+y) up for roll > 0
    return rz @ ry @ rx


def plane_rotation(slope_x: float, slope_y: float, yaw: float = 0.0) -> np.ndarray:
    """(3, 3) rotation whose local z is the normal of the plane z = slope_x * x + slope_y * y and whose
    local x is the plane's tangent above the world direction `yaw` (so a box's x edges stay over it)."""
    n = np.array([-slope_x, -slope_y, 1.0])
    n /= np.linalg.norm(n)
    c, s = np.cos(yaw), np.sin(yaw)
    ex = np.array([c, s, c * slope_x + s * slope_y])
    ex /= np.linalg.norm(ex)
    ey = np.cross(n, ex)
    return np.stack([ex, ey, n], axis=1)


@dataclass(frozen=True)
class Primitives:
    """P primitives (struct of arrays).

    Attributes:
        kind: (P,) int8, BOX / CYLINDER / ELLIPSOID.
        center: (P, 3) float64 world position, metres.
        size: (P, 3) float64 half extents / (radius, radius, half height) / radii, metres.
        rotation: (P, 3, 3) float64 world-from-local rotation.
        raw_label: (P,) uint32 raw SemanticKITTI semantic id (``elite_ros.labels.RAW_NAMES``).
        instance: (P,) uint16 instance id (0 for stuff classes); parts of one object share it.
        material: (P,) uint8 material id (``materials.Material``).
        colour: (P, 3) float32 base albedo in 0..1 (used by materials that take a per-object colour).
        paint: (P, 4) float32 road-paint parameters of ground slabs (``ground.paint_mask``; zeros = none).
    """

    kind: np.ndarray
    center: np.ndarray
    size: np.ndarray
    rotation: np.ndarray
    raw_label: np.ndarray
    instance: np.ndarray
    material: np.ndarray
    colour: np.ndarray
    paint: np.ndarray
    aabb_min: np.ndarray = field(init=False, repr=False)
    aabb_max: np.ndarray = field(init=False, repr=False)
    key: np.ndarray = field(init=False, repr=False)  # (P,) int64 id from where the primitive is, not its index

    def __post_init__(self) -> None:
        r, s = self.rotation, self.size
        box_half = np.einsum("pij,pj->pi", np.abs(r), s)  # boxes and cylinders: the rotated corners
        round_half = np.sqrt(np.einsum("pij,pj->pi", r * r, s * s))  # ellipsoids: exact extents
        half = np.where((self.kind == ELLIPSOID)[:, None], round_half, box_half)
        object.__setattr__(self, "aabb_min", self.center - half)
        object.__setattr__(self, "aabb_max", self.center + half)
        mm = np.round(self.center * 1000.0)
        object.__setattr__(self, "key", (hash01(mm[:, 0], mm[:, 1], mm[:, 2], seed=7) * (1 << 31)).astype(np.int64))

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def subset(self, index: np.ndarray) -> Primitives:
        """The primitives at `index` (in that order)."""
        return Primitives(self.kind[index], self.center[index], self.size[index], self.rotation[index],
                          self.raw_label[index], self.instance[index], self.material[index], self.colour[index],
                          self.paint[index])


class PrimitiveBuilder:
    """Collects primitives one by one, then :meth:`build` makes the arrays."""

    def __init__(self) -> None:
        self._rows: list[tuple] = []

    def add(self, kind: int, center, size, yaw: float, raw_label: int, instance: int, material: int,
            colour=(0.5, 0.5, 0.5), rotation: np.ndarray | None = None, paint=NO_PAINT) -> None:
        """One primitive turned by `yaw` about +z, or by the full `rotation` (3, 3) when given."""
        size = tuple(float(v) for v in size)
        if min(size) <= 0:
            raise ValueError(f"primitive size must be positive, got {size}")
        rot = rotation_matrix(float(yaw)) if rotation is None else np.asarray(rotation, np.float64)
        self._rows.append((kind, tuple(float(v) for v in center), size, rot, int(raw_label), int(instance),
                           int(material), tuple(float(v) for v in colour), tuple(float(v) for v in paint)))

    def box(self, center, half, yaw: float, raw_label: int, instance: int, material: int, colour=(0.5, 0.5, 0.5),
            rotation: np.ndarray | None = None, paint=NO_PAINT):
        self.add(BOX, center, half, yaw, raw_label, instance, material, colour, rotation, paint)

    def cylinder(self, x: float, y: float, z0: float, z1: float, radius: float, raw_label: int, instance: int,
                 material: int, colour=(0.5, 0.5, 0.5)):
        """A vertical cylinder from z0 to z1 (metres) at (x, y)."""
        self.add(CYLINDER, (x, y, 0.5 * (z0 + z1)), (radius, radius, 0.5 * (z1 - z0)), 0.0, raw_label, instance,
                 material, colour)

    def ellipsoid(self, center, radii, yaw: float, raw_label: int, instance: int, material: int,
                  colour=(0.5, 0.5, 0.5), rotation: np.ndarray | None = None):
        self.add(ELLIPSOID, center, radii, yaw, raw_label, instance, material, colour, rotation)

    def __len__(self) -> int:
        return len(self._rows)

    def build(self) -> Primitives:
        if not self._rows:
            empty3 = np.zeros((0, 3))
            return Primitives(np.zeros(0, np.int8), empty3, empty3, np.zeros((0, 3, 3)), np.zeros(0, np.uint32),
                              np.zeros(0, np.uint16), np.zeros(0, np.uint8), empty3.astype(np.float32),
                              np.zeros((0, 4), np.float32))
        kind, center, size, rot, raw, inst, mat, colour, paint = zip(*self._rows)
        return Primitives(
            kind=np.array(kind, np.int8), center=np.array(center, np.float64), size=np.array(size, np.float64),
            rotation=np.array(rot, np.float64), raw_label=np.array(raw, np.uint32),
            instance=np.array(inst, np.uint16), material=np.array(mat, np.uint8),
            colour=np.array(colour, np.float32), paint=np.array(paint, np.float32),
        )


def intersect_interval(prims: Primitives, index: int, origin: np.ndarray, dirs: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances (n,) of rays (n, 3) from `origin` (3,) through primitive `index`.

    Entry is inf where a ray misses (or starts inside); exit is where it leaves the solid (meaningful only
    where the entry is finite; cylinders report their far side wall or the bottom).
    """
    kind = prims.kind[index]
    rot = prims.rotation[index]
    o = (origin - prims.center[index]) @ rot
    d = dirs @ rot
    size = prims.size[index]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == BOX:
            return _box(o, d, size)
        if kind == CYLINDER:
            return _cylinder(o, d, size)
        return _ellipsoid(o, d, size)


def intersect(prims: Primitives, index: int, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance along each ray (n, 3) from `origin` (3,) to primitive `index`; inf where missed."""
    return intersect_interval(prims, index, origin, dirs)[0]


def _box(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    near = np.full(d.shape[0], -np.inf)
    far = np.full(d.shape[0], np.inf)
    for k in range(3):  # slab method, one axis at a time (faster than reducing (n, 3) arrays)
        inv = 1.0 / d[:, k]
        t1 = (-half[k] - o[k]) * inv
        t2 = (half[k] - o[k]) * inv
        np.maximum(near, np.minimum(t1, t2), out=near)
        np.minimum(far, np.maximum(t1, t2), out=far)
    hit = (near <= far) & (near > _EPS)
    return np.where(hit, near, np.inf), far


def _cylinder(o: np.ndarray, d: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, h = size[0], size[2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - r * r
    disc = b * b - 4.0 * a * c
    root = np.sqrt(disc)
    t_side = (-b - root) / (2.0 * a)
    z = o[2] + t_side * d[:, 2]
    side = (disc >= 0) & (a > 0) & (t_side > _EPS) & (np.abs(z) <= h)
    t = np.where(side, t_side, np.inf)
    if o[2] > h:  # the top cap is only visible from above
        t_cap = (h - o[2]) / d[:, 2]
        px, py = o[0] + t_cap * d[:, 0], o[1] + t_cap * d[:, 1]
        cap = (d[:, 2] < 0) & (px * px + py * py <= r * r) & (t_cap > _EPS)
        t = np.where(cap & (t_cap < t), t_cap, t)
    t_far = (-b + root) / (2.0 * a)
    t_bottom = np.where(d[:, 2] < 0, (-h - o[2]) / d[:, 2], np.inf)
    return t, np.minimum(np.where(np.isfinite(t_far), t_far, np.inf), t_bottom)


def _ellipsoid(o: np.ndarray, d: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    os_, ds = o / radii, d / radii
    a = (ds * ds).sum(axis=1)
    b = 2.0 * (ds @ os_)
    c = float(os_ @ os_) - 1.0
    disc = b * b - 4.0 * a * c
    root = np.sqrt(disc)
    t = (-b - root) / (2.0 * a)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf), (-b + root) / (2.0 * a)


def surface(prims: Primitives, index: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local coordinates and world normals of hit points on primitives.

    Args:
        index: (n,) primitive index of each hit.
        points: (n, 3) world hit points, metres.

    Returns:
        local: (n, 3) the hit in the primitive's frame (origin at its centre), metres.
        normal: (n, 3) unit outward world normal.
    """
    kind, size, rot = prims.kind[index], prims.size[index], prims.rotation[index]
    local = np.einsum("nij,ni->nj", rot, points - prims.center[index])
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
    world = np.einsum("nij,nj->ni", rot, normal)
    return local, world
