"""A Velodyne HDL-64E ray caster: 64 beams x 2083 azimuths, range noise, intensity, dropouts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elite_ros.labels import INSTANCE_SHIFT

from .materials import MATERIAL_DROPOUT, POROSITY, reflectivity
from .noise import hash01
from .pose import EgoPose
from .raycast import cast, hit_surface
from .scene import Scene

# HDL-64E S2 vertical pattern (Velodyne manual; KITTI, Geiger et al. 2013): an upper block of 32 beams
# ~1/3 deg apart and a lower block of 32 beams ~1/2 deg apart. The end angles are the median elevations
# of the top and bottom rings of the real KITTI scans (rings split at the azimuth wrap of the stored point
# order: +2.4 .. -7.7 and -8.4 .. -23.6 deg, lowest ring at 3.8-4.0 m; benchmarks/synthetic_realism.py).
UPPER_BLOCK_DEG = (2.4, -7.9)
LOWER_BLOCK_DEG = (-8.4, -23.6)
BEAMS_PER_BLOCK = 32
# The ego car hides the lowest beams towards its bonnet and boot: real KITTI rings below ~-16 deg lose
# up to 44 % of their points (the lowest ring; -21 deg: 30 %, -18 deg: 10 %), modelled as a loss
# EGO_LOSS_MAX * ((-el - EGO_LOSS_START) / (EGO_LOSS_FULL - EGO_LOSS_START))^EGO_LOSS_POWER, centred
# on the car's axis (front and back).
EGO_LOSS_START, EGO_LOSS_FULL, EGO_LOSS_MAX, EGO_LOSS_POWER = 16.0, 24.0, 0.5, 1.3
AZIMUTH_STEP_DEG = 360.0 / 2083  # ~0.17 deg at 10 Hz
MAX_RANGE = 120.0  # metres, HDL-64E specification
# Intensity falls off with range: real KITTI road / terrain / vegetation intensity is flat to ~20 m, ~25 %
# lower at 20-40 m and mostly 0 beyond 40 m (spvnas scan, benchmarks/synthetic_realism.py), modelled as
# 1 / (1 + (r / FALLOFF_RANGE)^FALLOFF_POWER).
FALLOFF_RANGE, FALLOFF_POWER = 38.0, 6.0
INTENSITY_STEP = 0.01  # KITTI intensities are quantised to 0.01 (100 distinct values in a scan)
# Weak incidence dependence: real road intensity at 5 m (steep) and 20 m (grazing) is the same.
INCIDENCE_FLOOR = 0.6


@dataclass(frozen=True)
class LidarConfig:
    """Sensor model knobs (metres, fractions).

    Attributes:
        max_range: returns beyond this are lost, metres.
        min_range: returns closer than this are lost, metres.
        range_noise_std: Gaussian range noise, metres.
        dropout: probability that any return is lost.
        far_dropout: extra loss probability at max range for a black target (scaled by (r/max)^2 (1-refl)).
        intensity_noise_std: Gaussian noise on intensity (0..1 scale).
    """

    max_range: float = MAX_RANGE
    min_range: float = 1.0
    range_noise_std: float = 0.02
    dropout: float = 0.03
    far_dropout: float = 0.5
    intensity_noise_std: float = 0.03


@dataclass(frozen=True)
class LidarScan:
    """One scan in the LiDAR frame (x forward, y left, z up), points ordered azimuth-major like a spin.

    Attributes:
        xyz: (N, 3) float32 metres.
        intensity: (N,) float32 in 0..1.
        label: (N,) uint32 SemanticKITTI `.label` values: raw semantic id | instance id << 16.
        ring: (N,) uint8 beam index, 0 = the top beam.
    """

    xyz: np.ndarray
    intensity: np.ndarray
    label: np.ndarray
    ring: np.ndarray


def beam_elevations() -> np.ndarray:
    """(64,) beam elevation angles in radians, top beam first (descending)."""
    upper = np.linspace(*UPPER_BLOCK_DEG, BEAMS_PER_BLOCK)
    lower = np.linspace(*LOWER_BLOCK_DEG, BEAMS_PER_BLOCK)
    return np.deg2rad(np.concatenate([upper, lower]))


def azimuths() -> np.ndarray:
    """(2083,) column azimuths in radians in the LiDAR frame, starting behind the car and turning clockwise."""
    step = np.deg2rad(AZIMUTH_STEP_DEG)
    return np.pi - step * np.arange(int(round(360.0 / AZIMUTH_STEP_DEG)))


def sensor_directions() -> np.ndarray:
    """(64, 2083, 3) unit ray directions in the LiDAR frame."""
    el, az = beam_elevations()[:, None], azimuths()[None, :]
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) * np.ones_like(az)], axis=-1)


def ego_occlusion() -> np.ndarray:
    """(64, 2083) bool: rays of the sensor grid that the ego car's own body blocks."""
    el = -np.rad2deg(beam_elevations())
    loss = EGO_LOSS_MAX * np.clip((el - EGO_LOSS_START) / (EGO_LOSS_FULL - EGO_LOSS_START), 0.0, 1.0) ** EGO_LOSS_POWER
    half_width = np.sin(loss * np.pi / 2)  # |sin(azimuth)| below this: towards the bonnet or the boot
    return np.abs(np.sin(azimuths()))[None, :] < half_width[:, None]


class SphericalCover:
    """Which beams and azimuth columns of a spinning LiDAR at `pose` can see an axis-aligned box."""

    def __init__(self, pose: EgoPose, elevations: np.ndarray, num_azimuths: int) -> None:
        self.origin = pose.position
        self.yaw = pose.yaw
        self.elevations = elevations  # descending
        self.num_azimuths = num_azimuths
        self.step = 2 * np.pi / num_azimuths
        # beams/columns next to the bounds are tested too; a tilted sensor moves a beam's world elevation
        # by up to the tilt and its azimuth by up to tilt * tan(25 deg) < tilt
        self.margin = np.deg2rad(0.6) + pose.tilt

    def __call__(self, lo: np.ndarray, hi: np.ndarray):
        o = self.origin
        dx = np.maximum(np.maximum(lo[0] - o[0], o[0] - hi[0]), 0.0)
        dy = np.maximum(np.maximum(lo[1] - o[1], o[1] - hi[1]), 0.0)
        rho_min = np.hypot(dx, dy)
        rho_max = np.hypot(max(abs(lo[0] - o[0]), abs(hi[0] - o[0])), max(abs(lo[1] - o[1]), abs(hi[1] - o[1])))
        top, bottom = hi[2] - o[2], lo[2] - o[2]
        el_max = np.arctan2(top, rho_min if top > 0 else rho_max) + self.margin
        el_min = np.arctan2(bottom, rho_max if bottom > 0 else rho_min) - self.margin
        r0 = int(np.count_nonzero(self.elevations > el_max))
        r1 = int(np.count_nonzero(self.elevations >= el_min))
        if r1 <= r0:
            return None
        rows = slice(r0, r1)
        if rho_min < 0.05:
            return rows, slice(None)
        cx, cy = np.array([lo[0], hi[0], lo[0], hi[0]]) - o[0], np.array([lo[1], lo[1], hi[1], hi[1]]) - o[1]
        centre = np.arctan2(0.5 * (lo[1] + hi[1]) - o[1], 0.5 * (lo[0] + hi[0]) - o[0])
        rel = np.angle(np.exp(1j * (np.arctan2(cy, cx) - centre)))
        a_max, a_min = centre + rel.max() - self.yaw + self.margin, centre + rel.min() - self.yaw - self.margin
        # column j looks along pi - j * step (decreasing azimuth)
        j0 = int(np.floor((np.pi - a_max) / self.step))
        j1 = int(np.ceil((np.pi - a_min) / self.step)) + 1
        if j1 - j0 >= self.num_azimuths:
            return rows, slice(None)
        span = j1 - j0
        j0 %= self.num_azimuths
        j1 = j0 + span
        if j1 <= self.num_azimuths:
            return rows, slice(j0, j1)
        return rows, np.arange(j0, j1) % self.num_azimuths


_SENSOR_DIRECTIONS = None
_EGO_OCCLUSION = None


def _directions() -> np.ndarray:
    global _SENSOR_DIRECTIONS, _EGO_OCCLUSION
    if _SENSOR_DIRECTIONS is None:
        _SENSOR_DIRECTIONS = sensor_directions()
        _EGO_OCCLUSION = ego_occlusion().reshape(-1)
    return _SENSOR_DIRECTIONS


def scan(scene: Scene, pose: EgoPose, rng: np.random.Generator, config: LidarConfig = LidarConfig()) -> LidarScan:
    """Simulate one HDL-64E revolution at `pose` (the scene is static during the spin)."""
    sensor_dirs = _directions()
    world_dirs = sensor_dirs @ pose.rotation().T
    cover = SphericalCover(pose, beam_elevations(), sensor_dirs.shape[1])
    penetration_seed = int(rng.integers(1 << 30))
    hits = cast(scene, pose.position, world_dirs, cover, config.max_range, penetration_seed=penetration_seed)
    surf = hit_surface(scene, hits, pose.position, world_dirs)

    flat_dirs = world_dirs.reshape(-1, 3)[surf.flat_index]
    distance = hits.t.reshape(-1)[surf.flat_index]
    n = distance.shape[0]
    noisy = distance + rng.normal(0.0, config.range_noise_std, n)
    cos_incidence = np.abs((surf.sample.normal * flat_dirs).sum(axis=1))
    material = surf.sample.material
    porous = np.isin(material, [int(m) for m in POROSITY])  # a leaf inside a crown faces anywhere
    cos_incidence[porous] = hash01(surf.flat_index[porous], seed=penetration_seed + 1)
    refl = reflectivity(surf.sample, cos_incidence)
    falloff = 1.0 / (1.0 + (distance / FALLOFF_RANGE) ** FALLOFF_POWER)
    intensity = (refl * (INCIDENCE_FLOOR + (1.0 - INCIDENCE_FLOOR) * cos_incidence) * falloff
                 + rng.normal(0.0, config.intensity_noise_std, n))
    intensity = np.floor(np.clip(intensity, 0.0, 1.0) / INTENSITY_STEP) * INTENSITY_STEP
    drop = np.full(n, config.dropout)
    for m, chance in MATERIAL_DROPOUT.items():
        drop[material == int(m)] = chance
    lost = rng.random(n) < drop + config.far_dropout * (distance / config.max_range) ** 2 * (1.0 - refl)
    keep = ~lost & (noisy > config.min_range) & (noisy < config.max_range) & ~_EGO_OCCLUSION[surf.flat_index]

    # azimuth-major order (a spinning sensor fires all beams of a column together)
    rows, cols = np.divmod(surf.flat_index, sensor_dirs.shape[1])
    order = np.lexsort((rows, cols))
    order = order[keep[order]]
    xyz = sensor_dirs.reshape(-1, 3)[surf.flat_index[order]] * noisy[order, None]
    label = surf.raw_label[order].astype(np.uint32) | (surf.instance[order].astype(np.uint32) << INSTANCE_SHIFT)
    return LidarScan(
        xyz=xyz.astype(np.float32),
        intensity=intensity[order].astype(np.float32),
        label=label,
        ring=rows[order].astype(np.uint8),
    )
