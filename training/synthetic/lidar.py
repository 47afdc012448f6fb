"""A Velodyne HDL-64E ray caster: 64 beams x 2083 azimuths, range noise, intensity, dropouts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elite_ros.labels import INSTANCE_SHIFT

from .materials import reflectivity
from .pose import EgoPose
from .raycast import cast, hit_surface
from .scene import Scene

# HDL-64E S2 vertical pattern (Velodyne manual; KITTI, Geiger et al. 2013): an upper block of 32 beams
# from +2.0 deg down to -8.33 deg (1/3 deg apart) and a lower block of 32 beams from -8.83 to -24.9 deg.
UPPER_BLOCK_DEG = (2.0, -8.33)
LOWER_BLOCK_DEG = (-8.83, -24.9)
BEAMS_PER_BLOCK = 32
AZIMUTH_STEP_DEG = 360.0 / 2083  # ~0.17 deg at 10 Hz
MAX_RANGE = 120.0  # metres, HDL-64E specification


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


class SphericalCover:
    """Which beams and azimuth columns of a spinning LiDAR at `pose` can see an axis-aligned box."""

    def __init__(self, pose: EgoPose, elevations: np.ndarray, num_azimuths: int) -> None:
        self.origin = pose.position
        self.yaw = pose.yaw
        self.elevations = elevations  # descending
        self.num_azimuths = num_azimuths
        self.step = 2 * np.pi / num_azimuths
        self.margin = np.deg2rad(0.6)  # beams/columns next to the bounds are tested too

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


def _directions() -> np.ndarray:
    global _SENSOR_DIRECTIONS
    if _SENSOR_DIRECTIONS is None:
        _SENSOR_DIRECTIONS = sensor_directions()
    return _SENSOR_DIRECTIONS


def scan(scene: Scene, pose: EgoPose, rng: np.random.Generator, config: LidarConfig = LidarConfig()) -> LidarScan:
    """Simulate one HDL-64E revolution at `pose` (the scene is static during the spin)."""
    sensor_dirs = _directions()
    world_dirs = sensor_dirs @ pose.rotation().T
    cover = SphericalCover(pose, beam_elevations(), sensor_dirs.shape[1])
    hits = cast(scene, pose.position, world_dirs, cover, config.max_range)
    surf = hit_surface(scene, hits, pose.position, world_dirs)

    flat_dirs = world_dirs.reshape(-1, 3)[surf.flat_index]
    distance = hits.t.reshape(-1)[surf.flat_index]
    n = distance.shape[0]
    noisy = distance + rng.normal(0.0, config.range_noise_std, n)
    cos_incidence = np.abs((surf.sample.normal * flat_dirs).sum(axis=1))
    refl = reflectivity(surf.sample)
    intensity = refl * (0.35 + 0.65 * cos_incidence) + rng.normal(0.0, config.intensity_noise_std, n)
    lost = rng.random(n) < config.dropout + config.far_dropout * (distance / config.max_range) ** 2 * (1.0 - refl)
    keep = ~lost & (noisy > config.min_range) & (noisy < config.max_range)

    # azimuth-major order (a spinning sensor fires all beams of a column together)
    rows, cols = np.divmod(surf.flat_index, sensor_dirs.shape[1])
    order = np.lexsort((rows, cols))
    order = order[keep[order]]
    xyz = sensor_dirs.reshape(-1, 3)[surf.flat_index[order]] * noisy[order, None]
    label = surf.raw_label[order].astype(np.uint32) | (surf.instance[order].astype(np.uint32) << INSTANCE_SHIFT)
    return LidarScan(
        xyz=xyz.astype(np.float32),
        intensity=np.clip(intensity[order], 0.0, 1.0).astype(np.float32),
        label=label,
        ring=rows[order].astype(np.uint8),
    )
