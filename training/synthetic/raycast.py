"""Nearest-hit ray casting of a scene for a grid of rays sharing one origin (a LiDAR or a camera).

Rays form an (H, W) grid. For each primitive, a *cover* function returns the part of the grid that can
possibly see it (a row slice and column indices), so each primitive is only tested against the rays
near it: a z-buffer over analytic intersections. Work and memory scale with the covered rays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .materials import GROUND_MATERIAL, Material, SurfaceSample
from .noise import hash01
from .primitives import intersect, surface
from .scene import Scene

GROUND = -2  # `primitive` value of rays that hit the ground plane
NOTHING = -1  # `primitive` value of rays that hit nothing within range

#: (aabb_min (3,), aabb_max (3,)) -> (row slice, column indices (k,) int) or None when not visible
Cover = Callable[[np.ndarray, np.ndarray], "tuple[slice, np.ndarray] | None"]


@dataclass(frozen=True)
class RayHits:
    """Nearest hit per ray.

    Attributes:
        t: (H, W) float64 distance to the hit along the unit direction, metres; inf where nothing.
        primitive: (H, W) int32 index into ``scene.primitives``, GROUND or NOTHING.
    """

    t: np.ndarray
    primitive: np.ndarray


def cast(scene: Scene, origin: np.ndarray, dirs: np.ndarray, cover: Cover, max_range: float) -> RayHits:
    """Cast the (H, W, 3) unit world directions from `origin` (3,) world metres up to `max_range` metres."""
    origin = np.asarray(origin, np.float64)
    h, w, _ = dirs.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dirs[..., 2] < -1e-9, -origin[2] / dirs[..., 2], np.inf)
    t[t > max_range] = np.inf
    prim = np.where(np.isfinite(t), GROUND, NOTHING).astype(np.int32)

    p = scene.primitives
    closest = np.linalg.norm(np.maximum(np.maximum(p.aabb_min - origin, origin - p.aabb_max), 0.0), axis=1)
    for i in np.flatnonzero(closest < max_range):
        covered = cover(p.aabb_min[i], p.aabb_max[i])
        if covered is None:
            continue
        rows, cols = covered
        sub_dirs = dirs[rows, cols].reshape(-1, 3)
        if sub_dirs.shape[0] == 0:
            continue
        ti = intersect(p, int(i), origin, sub_dirs).reshape(dirs[rows, cols].shape[:2])
        current = t[rows, cols]
        closer = ti < current
        if closer.any():
            t[rows, cols] = np.where(closer, ti, current)
            prim[rows, cols] = np.where(closer, i, prim[rows, cols])
    t[t > max_range] = np.inf
    prim[~np.isfinite(t)] = NOTHING
    return RayHits(t=t, primitive=prim)


@dataclass(frozen=True)
class HitSurface:
    """Surface properties of the rays that hit something (n = number of hits, in grid row-major order).

    Attributes:
        flat_index: (n,) index of each hit ray in the flattened (H*W) grid.
        raw_label: (n,) uint32 raw SemanticKITTI semantic id (lane markings = 60).
        instance: (n,) uint16 instance id, 0 for stuff.
        sample: the surfaces for material shading / reflectivity.
    """

    flat_index: np.ndarray
    raw_label: np.ndarray
    instance: np.ndarray
    sample: SurfaceSample


def hit_surface(scene: Scene, hits: RayHits, origin: np.ndarray, dirs: np.ndarray) -> HitSurface:
    """Classes, instances, normals, local coordinates and materials of every hit of `hits`."""
    flat_prim = hits.primitive.reshape(-1)
    index = np.flatnonzero(flat_prim != NOTHING)
    prim = flat_prim[index]
    point = origin + hits.t.reshape(-1)[index, None] * dirs.reshape(-1, 3)[index]
    n = index.shape[0]
    raw = np.zeros(n, np.uint32)
    instance = np.zeros(n, np.uint16)
    material = np.zeros(n, np.int64)
    local = point.copy()
    normal = np.zeros((n, 3))
    colour = np.zeros((n, 3), np.float32)
    size = np.zeros((n, 3))
    painted = np.zeros(n, bool)

    ground = prim == GROUND
    g_raw, g_painted = scene.ground.classify(point[ground, 0], point[ground, 1])
    raw[ground], painted[ground] = g_raw, g_painted
    material[ground] = _ground_material(g_raw)
    normal[ground] = (0.0, 0.0, 1.0)

    solid = ~ground
    pid = prim[solid]
    p = scene.primitives
    local[solid], normal[solid] = surface(p, pid, point[solid])
    raw[solid], instance[solid], material[solid] = p.raw_label[pid], p.instance[pid], p.material[pid]
    colour[solid], size[solid] = p.colour[pid], p.size[pid]
    # stuff primitives (buildings, fences) vary their textures by a hash of where they stand, which does
    # not change with how much street was generated
    texture_id = np.zeros(n, np.int64)
    centre = np.round(p.center[pid] * 100.0)
    place = (hash01(centre[:, 0], centre[:, 1], centre[:, 2], seed=41) * (1 << 30)).astype(np.int64) + (1 << 16)
    texture_id[solid] = np.where(instance[solid] > 0, instance[solid], place)
    sample = SurfaceSample(material=material, point=point, local=local, normal=normal, colour=colour, size=size,
                           instance=texture_id, painted=painted)
    return HitSurface(flat_index=index, raw_label=raw, instance=instance, sample=sample)


_GROUND_LUT = np.zeros(256, np.int64)
for _raw, _material in GROUND_MATERIAL.items():
    _GROUND_LUT[_raw] = int(_material)
_GROUND_LUT[0] = int(Material.ASPHALT)


def _ground_material(raw: np.ndarray) -> np.ndarray:
    return _GROUND_LUT[np.asarray(raw, np.int64)]
