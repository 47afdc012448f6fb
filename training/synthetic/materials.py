"""Surface materials: LiDAR reflectivity and procedural camera albedo (textures) per material.

Classes that look alike to a LiDAR (road / parking / sidewalk / terrain, vegetation / fence) get
clearly different textures here, which is what the camera teacher can add to the LiDAR student.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .noise import fractal, hash01, value_noise


class Material(IntEnum):
    ASPHALT = 0  # road
    PARKING = 1  # parking asphalt with painted bays
    PAVING = 2  # sidewalk tiles, kerb stones on the sides
    GRASS = 3  # terrain
    GRAVEL = 4  # other-ground
    FACADE = 5  # building walls with windows, roof on top
    FENCE = 6  # wooden / metal slats
    FOLIAGE = 7  # vegetation: tree crowns, bushes, hedges
    BARK = 8  # trunk
    METAL = 9  # poles, lamp arms
    SIGN = 10  # traffic-sign boards (retro-reflective)
    PAINT = 11  # vehicle bodies, bicycle frames
    CABIN = 12  # vehicle cabin: glass on the sides, painted roof
    TYRE = 13
    CLOTH = 14
    SKIN = 15


#: LiDAR reflectivity per material, 0..1 (intensity before the incidence, range and noise factors in
#: `lidar.scan`), set so that synthetic per-class median intensities match the real spvnas SemanticKITTI
#: scan (benchmarks/synthetic_realism.py: road 0.20, sidewalk 0.31, terrain 0.34, vegetation 0.32,
#: trunk 0.34, building 0.24, fence 0.23, pole 0.20, person 0.36, car 0.00 with 58 % exact zeros)
REFLECTIVITY = np.array([
    0.32, 0.30, 0.47, 0.52, 0.42, 0.36, 0.34, 0.44, 0.40, 0.24, 0.25, 0.015, 0.05, 0.05, 0.44, 0.40,
])
PAINTED_REFLECTIVITY = 0.70  # lane markings and bay lines are retro-reflective paint
SIGN_FACE_REFLECTIVITY = 1.5  # the retro-reflective front of a sign saturates nearby (real p95 0.99; back: metal)
# Car paint is dark and mirror-like to a 905 nm LiDAR: a weak diffuse return plus a narrow specular lobe
# (real KITTI cars: median intensity 0, 95th percentile 0.49).
PAINT_SPECULAR, PAINT_SPECULAR_POWER = 0.6, 16.0
TEXTURE_SCALE = 1.5  # metres: reflectivity varies by +-45 % in patches this size (stains, wear, moisture)

#: porous materials: (mean depth of a LiDAR return below the outer surface, metres; chance that a ray
#: passes through a gap, for the LiDAR and the camera alike; gap lattice cell, metres). Beams reach
#: leaves a few to tens of cm inside a hedge or crown (real KITTI vegetation looks ~6 cm thick in 0.5 m
#: voxels, benchmarks/synthetic_realism.py); fences have gaps between slats and bars.
POROSITY = {Material.FOLIAGE: (0.12, 0.10, 0.3), Material.FENCE: (0.0, 0.25, 0.12)}
#: chance that a LiDAR return is lost, by material (glass lets most beams through or mirrors them away)
MATERIAL_DROPOUT = {Material.CABIN: 0.55}

#: ground raw SemanticKITTI id -> material
GROUND_MATERIAL = {40: Material.ASPHALT, 60: Material.ASPHALT, 44: Material.PARKING, 48: Material.PAVING,
                   49: Material.GRAVEL, 72: Material.GRASS}


@dataclass(frozen=True)
class SurfaceSample:
    """n surface points seen by rays.

    Attributes:
        material: (n,) int material id.
        point: (n, 3) world hit point, metres.
        local: (n, 3) hit point in the primitive's frame (equal to `point` for the ground), metres.
        normal: (n, 3) unit world normal.
        colour: (n, 3) per-primitive base colour 0..1.
        size: (n, 3) primitive half size, metres (zeros for the ground).
        instance: (n,) object id used to vary textures between objects (0 for the ground).
        painted: (n,) bool, paint on the ground (lane markings, parking bays).
    """

    material: np.ndarray
    point: np.ndarray
    local: np.ndarray
    normal: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    instance: np.ndarray
    painted: np.ndarray


def reflectivity(s: SurfaceSample, cos_incidence: np.ndarray | None = None) -> np.ndarray:
    """(n,) LiDAR reflectivity 0..1 of each sample; `cos_incidence` (n,) adds the paint's specular lobe."""
    x, y, z = s.point[:, 0], s.point[:, 1], s.point[:, 2]
    refl = REFLECTIVITY[s.material] * (0.55 + 0.9 * fractal(x + 0.3 * z, y - 0.5 * z, TEXTURE_SCALE, 2, seed=60))
    if cos_incidence is not None:
        paint = s.material == int(Material.PAINT)
        refl[paint] += PAINT_SPECULAR * cos_incidence[paint] ** PAINT_SPECULAR_POWER
    face = (s.material == int(Material.SIGN)) & (s.local[:, 0] < -0.9 * s.size[:, 0])
    refl[face] = SIGN_FACE_REFLECTIVITY
    return np.where(s.painted, PAINTED_REFLECTIVITY, refl)


def albedo(s: SurfaceSample) -> np.ndarray:
    """(n, 3) camera albedo 0..1 of each sample (textures from world / local coordinates)."""
    order = np.argsort(s.material, kind="stable")  # group by material: one gather, then contiguous slices
    grouped = SurfaceSample(*(getattr(s, f)[order] for f in SurfaceSample.__dataclass_fields__))
    materials, starts = np.unique(grouped.material, return_index=True)
    ends = np.append(starts[1:], order.shape[0])
    out = np.empty((order.shape[0], 3))
    for material, a, b in zip(materials, starts, ends):
        part = SurfaceSample(*(getattr(grouped, f)[a:b] for f in SurfaceSample.__dataclass_fields__))
        out[order[a:b]] = _TEXTURES[Material(int(material))](part)
    return np.clip(out, 0.0, 1.0)


def _grey(v: np.ndarray, tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    return v[:, None] * np.asarray(tint)[None, :]


def _mix(a, b, w: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a * (1 - w[:, None]) + b * w[:, None]


def _asphalt(s: SurfaceSample) -> np.ndarray:
    x, y = s.point[:, 0], s.point[:, 1]
    v = 0.30 + 0.10 * (fractal(x, y, 3.0, 2, seed=1) - 0.5) + 0.08 * (hash01(x / 0.03, y / 0.03, seed=2) - 0.5)
    rgb = _grey(v, (1.0, 1.0, 1.04))
    rgb[s.painted] = _grey(0.82 + 0.06 * (hash01(x[s.painted] / 0.05, y[s.painted] / 0.05) - 0.5))
    return rgb


def _parking(s: SurfaceSample) -> np.ndarray:
    x, y = s.point[:, 0], s.point[:, 1]
    stain = fractal(x, y, 1.5, 2, seed=3)
    v = 0.23 + 0.06 * (hash01(x / 0.03, y / 0.03, seed=4) - 0.5) - 0.08 * np.clip(stain - 0.6, 0, 1)
    rgb = _grey(v, (1.12, 1.0, 0.86))  # older, brownish asphalt
    rgb[s.painted] = (0.92, 0.92, 0.86)
    return rgb


def _paving(s: SurfaceSample) -> np.ndarray:
    x, y = s.point[:, 0], s.point[:, 1]
    tile = 0.4  # metres
    tone = 0.60 + 0.10 * (hash01(np.floor(x / tile), np.floor(y / tile), seed=5) - 0.5)
    fx, fy = (x / tile) % 1.0, (y / tile) % 1.0
    joint = (fx < 0.05) | (fy < 0.05)
    v = np.where(joint, 0.38, tone) + 0.04 * (hash01(x / 0.02, y / 0.02, seed=6) - 0.5)
    rgb = _grey(v, (1.02, 0.98, 0.92))
    kerb = s.normal[:, 2] < 0.5
    rgb[kerb] = _grey(0.70 + 0.05 * (hash01(x[kerb] / 0.05, s.point[kerb, 2] / 0.05) - 0.5))
    return rgb


def _grass(s: SurfaceSample) -> np.ndarray:
    x, y = s.point[:, 0], s.point[:, 1]
    patch = fractal(x, y, 2.0, 3, seed=7)
    blade = hash01(x / 0.04, y / 0.04, seed=8)
    rgb = _mix((0.27, 0.42, 0.13), (0.46, 0.40, 0.22), np.clip(patch * 1.6 - 0.5, 0, 1))
    return rgb * (0.75 + 0.45 * blade)[:, None]


def _gravel(s: SurfaceSample) -> np.ndarray:
    x, y = s.point[:, 0], s.point[:, 1]
    stone = hash01(x / 0.035, y / 0.035, seed=9)
    rgb = _mix((0.50, 0.46, 0.40), (0.62, 0.60, 0.56), fractal(x, y, 1.0, 2, seed=10))
    return rgb * (0.65 + 0.6 * stone)[:, None]


def _face_coordinate(s: SurfaceSample) -> np.ndarray:
    """Horizontal coordinate along a vertical face, metres."""
    n = s.normal
    return -n[:, 1] * s.point[:, 0] + n[:, 0] * s.point[:, 1]


def _facade(s: SurfaceSample) -> np.ndarray:
    u, h = _face_coordinate(s), s.point[:, 2]
    rgb = s.colour * (0.9 + 0.15 * fractal(u, h, 0.8, 2, seed=11))[:, None]
    fu, fh = (u / 3.0) % 1.0, (h / 3.2) % 1.0
    window = (fu > 0.28) & (fu < 0.72) & (fh > 0.3) & (fh < 0.78) & (h > 1.0) & (np.abs(s.normal[:, 2]) < 0.5)
    frame = (fu > 0.25) & (fu < 0.75) & (fh > 0.27) & (fh < 0.81) & (h > 1.0) & ~window
    lit = hash01(np.floor(u / 3.0), np.floor(h / 3.2), s.instance, seed=12)
    glass = _mix((0.10, 0.13, 0.19), (0.45, 0.52, 0.60), np.clip(lit - 0.55, 0, 1) * 1.5)
    rgb[window] = glass[window]
    rgb[frame] = (0.85, 0.85, 0.82)
    plinth = (h < 0.5) & (np.abs(s.normal[:, 2]) < 0.5)
    rgb[plinth] *= 0.6
    roof = s.normal[:, 2] > 0.5
    rgb[roof] = (0.30, 0.28, 0.27)
    return rgb


def _fence(s: SurfaceSample) -> np.ndarray:
    u, h = _face_coordinate(s), s.point[:, 2]
    slat_width = 0.14  # metres
    slat = (u / slat_width) % 1.0 < 0.72
    tone = 0.85 + 0.3 * hash01(np.floor(u / slat_width), s.instance, seed=13)
    grain = 0.9 + 0.2 * value_noise(u / 0.02, h / 0.4, seed=14)
    rgb = s.colour * (tone * grain)[:, None]
    rgb[~slat] *= 0.35  # the gap between slats
    rail = ((h > 0.25) & (h < 0.33)) | ((h > s.size[:, 2] * 2 - 0.4) & (h < s.size[:, 2] * 2 - 0.32))
    rgb[rail] *= 0.75
    return rgb


def _foliage(s: SurfaceSample) -> np.ndarray:
    x, y, z = s.point[:, 0], s.point[:, 1], s.point[:, 2]
    a, b = x + 0.7 * z, y - 0.6 * z
    clump = fractal(a, b, 0.6, 3, seed=15)
    leaf = hash01(a / 0.06, b / 0.06, np.floor(z / 0.06), seed=16)
    rgb = _mix((0.08, 0.22, 0.06), (0.30, 0.50, 0.16), clump)
    return rgb * (0.6 + 0.7 * leaf)[:, None]


def _bark(s: SurfaceSample) -> np.ndarray:
    angle = np.arctan2(s.local[:, 1], s.local[:, 0])
    streak = value_noise(angle * 10.0, s.point[:, 2] * 1.5, seed=17)
    rgb = np.tile((0.34, 0.24, 0.15), (s.point.shape[0], 1))
    return rgb * (0.6 + 0.6 * streak)[:, None]


def _plain(s: SurfaceSample) -> np.ndarray:
    grain = hash01(s.point[:, 0] / 0.05, s.point[:, 1] / 0.05, s.point[:, 2] / 0.05, seed=18)
    return s.colour * (0.94 + 0.12 * grain)[:, None]


def _sign(s: SurfaceSample) -> np.ndarray:
    q, half = np.abs(s.local), s.size
    border = (q[:, 1] > 0.8 * half[:, 1]) | (q[:, 2] > 0.8 * half[:, 2])
    rgb = s.colour.astype(float).copy()
    rgb[border] = (0.95, 0.95, 0.95)
    inner = (q[:, 1] < 0.35 * half[:, 1]) & (q[:, 2] < 0.12 * half[:, 2])  # a white bar, like a no-entry sign
    rgb[inner] = (0.95, 0.95, 0.95)
    edge = q[:, 0] < 0.9 * half[:, 0]  # hits on the board's thin edges (not on a face): metal
    rgb[edge] = (0.55, 0.56, 0.58)
    return rgb


def _cabin(s: SurfaceSample) -> np.ndarray:
    rel = np.clip((s.local[:, 2] / s.size[:, 2] + 1) * 0.5, 0, 1)  # 0 at the bottom, 1 at the top
    rgb = _mix((0.05, 0.07, 0.10), (0.32, 0.38, 0.46), rel * 0.7)
    roof = s.normal[:, 2] > 0.6
    rgb[roof] = s.colour[roof]
    pillar = np.abs(s.local[:, 0]) > 0.85 * s.size[:, 0]
    rgb[pillar & ~roof] = s.colour[pillar & ~roof] * 0.8
    return rgb


def _tyre(s: SurfaceSample) -> np.ndarray:
    r = np.hypot(s.local[:, 0], s.local[:, 2]) / np.maximum(s.size[:, 0], 1e-6)
    rim = r < 0.55
    rgb = np.tile((0.05, 0.05, 0.05), (s.point.shape[0], 1))
    rgb[rim] = (0.55, 0.56, 0.58)
    return rgb


_TEXTURES = {
    Material.ASPHALT: _asphalt, Material.PARKING: _parking, Material.PAVING: _paving, Material.GRASS: _grass,
    Material.GRAVEL: _gravel, Material.FACADE: _facade, Material.FENCE: _fence, Material.FOLIAGE: _foliage,
    Material.BARK: _bark, Material.METAL: _plain, Material.SIGN: _sign, Material.PAINT: _plain,
    Material.CABIN: _cabin, Material.TYRE: _tyre, Material.CLOTH: _plain, Material.SKIN: _plain,
}
