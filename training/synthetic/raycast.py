"""Nearest-hit ray casting of a scene for a grid of rays sharing one origin (a LiDAR or a camera).

Rays form an (H, W) grid. For each primitive, a *cover* function returns the part of the grid that can
possibly see it (a row slice and column indices), so each primitive is only tested against the rays
near it: a z-buffer over analytic intersections. Work and memory scale with the covered rays.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .ground import ROUGHNESS, paint_mask, roughness
from .materials import POROSITY, SurfaceSample
from .noise import hash01
from .primitives import intersect, intersect_interval, surface
from .scene import RAW, Scene

NOTHING = -1  # `primitive` value of rays that hit nothing within range
MAX_ROUGHNESS_SHIFT = 0.4  # metres: roughness moves a hit along its ray by at most this much
GAP_SEED = 90  # noise seed of the gap lattice of porous materials

#: (aabb_min (3,), aabb_max (3,)) -> (row slice, column indices (k,) int) or None when not visible
Cover = Callable[[np.ndarray, np.ndarray], "tuple[slice, np.ndarray] | None"]


@dataclass(frozen=True)
class RayHits:
    """Nearest hit per ray.

    Attributes:
        t: (H, W) float64 distance to the hit along the unit direction, metres; inf where nothing.
        primitive: (H, W) int32 index into ``scene.primitives``, or NOTHING.
    """

    t: np.ndarray
    primitive: np.ndarray


def cast(scene: Scene, origin: np.ndarray, dirs: np.ndarray, cover: Cover, max_range: float,
         penetration_seed: int | None = None) -> RayHits:
    """Cast the (H, W, 3) unit world directions from `origin` (3,) world metres up to `max_range` metres.

    Porous materials (``materials.POROSITY``) let rays through their gaps, a lattice fixed in the world
    so that every sensor sees the same gaps. With a `penetration_seed` (the LiDAR), a return from a
    porous solid comes from a random depth below its surface (exponential, per ray and solid; a ray
    that would leave the solid first passes through it). Ground hits move by the roughness of their
    material (``ground.roughness``) along the ray.
    """
    origin = np.asarray(origin, np.float64)
    h, w, _ = dirs.shape
    t = np.full((h, w), np.inf)
    prim = np.full((h, w), NOTHING, np.int32)
    ray_id = np.arange(h * w, dtype=np.int64).reshape(h, w)

    p = scene.primitives
    closest = np.linalg.norm(np.maximum(np.maximum(p.aabb_min - origin, origin - p.aabb_max), 0.0), axis=1)
    porous = {int(m): v for m, v in POROSITY.items()}
    candidates = np.flatnonzero(closest < max_range)
    for i in candidates[np.argsort(closest[candidates], kind="stable")]:  # front to back
        covered = cover(p.aabb_min[i], p.aabb_max[i])
        if covered is None:
            continue
        rows, cols = covered
        current = t[rows, cols]
        open_ = current > closest[i]  # rays already stopped nearer than this primitive cannot see it
        if not open_.any():
            continue
        sub_dirs = dirs[rows, cols][open_]
        material = int(p.material[i])
        if material in porous:
            rays = (ray_id[rows, cols][open_], penetration_seed) if penetration_seed is not None else None
            ti = _porous_hits(p, int(i), origin, sub_dirs, porous[material], rays)
        else:
            ti = intersect(p, int(i), origin, sub_dirs)
        closer = ti < current[open_]
        if closer.any():
            sel = np.zeros(open_.shape, bool)
            sel[open_] = closer
            current[sel] = ti[closer]
            block_prim = prim[rows, cols]
            block_prim[sel] = i
            t[rows, cols] = current
            prim[rows, cols] = block_prim
    _roughen(scene, origin, dirs, t, prim)
    t[t > max_range] = np.inf
    prim[~np.isfinite(t)] = NOTHING
    return RayHits(t=t, primitive=prim)


def _porous_hits(p, i: int, origin: np.ndarray, dirs: np.ndarray, porosity: tuple[float, float, float],
                 penetration: tuple[np.ndarray, int] | None) -> np.ndarray:
    """Hit distances (n,) on porous primitive `i`: gaps let rays through; LiDAR returns come from inside."""
    depth, gap_chance, cell = porosity
    t_in, t_out = intersect_interval(p, i, origin, dirs)
    hit = np.flatnonzero(np.isfinite(t_in))
    if hit.size == 0:
        return t_in
    entry = origin + t_in[hit, None] * dirs[hit]
    q = np.floor(entry / cell)
    through = hash01(q[:, 0], q[:, 1], q[:, 2], seed=GAP_SEED) < gap_chance
    t_hit = t_in[hit]
    if penetration is not None and depth > 0:
        rays, seed = penetration
        v = hash01(rays[hit], np.full(hit.shape, p.key[i]), seed=seed)
        t_hit = t_hit - depth * np.log1p(-v)
        through |= t_hit > t_out[hit]
    out = np.full(t_in.shape, np.inf)
    out[hit] = np.where(through, np.inf, t_hit)
    return out


def _roughen(scene: Scene, origin: np.ndarray, dirs: np.ndarray, t: np.ndarray, prim: np.ndarray) -> None:
    """Move ground hits of rough materials along their rays to the rough surface (in place)."""
    p = scene.primitives
    flat_prim, flat_t = prim.reshape(-1), t.reshape(-1)
    index = np.flatnonzero(flat_prim != NOTHING)
    mats = p.material[flat_prim[index]]
    rough = np.isin(mats, [int(m) for m in ROUGHNESS]) & (p.instance[flat_prim[index]] == 0)
    index, mats = index[rough], mats[rough]
    if index.size == 0:
        return
    d = dirs.reshape(-1, 3)[index]
    point = origin + flat_t[index, None] * d
    lift = roughness(mats, point[:, 0], point[:, 1])
    up = p.rotation[flat_prim[index], :, 2]  # slab normal
    facing = np.maximum(-(d * up).sum(axis=1), 0.05)
    flat_t[index] += np.clip(-lift / facing, -MAX_ROUGHNESS_SHIFT, MAX_ROUGHNESS_SHIFT)


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
    pid = flat_prim[index]
    point = origin + hits.t.reshape(-1)[index, None] * dirs.reshape(-1, 3)[index]
    p = scene.primitives
    local, normal = surface(p, pid, point)
    raw = p.raw_label[pid].astype(np.uint32)
    instance = p.instance[pid]
    material = p.material[pid].astype(np.int64)
    painted = np.zeros(index.shape[0], bool)
    paint = p.paint[pid]
    ground = (paint[:, 0] > 0) & (normal[:, 2] > 0.7)  # paint lies on slab tops only
    if ground.any():
        painted[ground] = paint_mask(paint[ground], point[ground, 0], point[ground, 1])
    raw[painted & (raw == RAW["road"])] = RAW["lane-marking"]
    # stuff primitives (buildings, fences) vary their textures by a hash of where they stand, which does
    # not change with how much street was generated
    centre = np.round(p.center[pid] * 100.0)
    place = (hash01(centre[:, 0], centre[:, 1], centre[:, 2], seed=41) * (1 << 30)).astype(np.int64) + (1 << 16)
    texture_id = np.where(instance > 0, instance, place)
    sample = SurfaceSample(material=material, point=point, local=local, normal=normal, colour=p.colour[pid],
                           size=p.size[pid], instance=texture_id, painted=painted)
    return HitSurface(flat_index=index, raw_label=raw, instance=instance, sample=sample)
