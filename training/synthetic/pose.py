"""The ego vehicle's LiDAR pose on the street, and the ego trajectory of a sequence."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import EGO_LANE_Y

LIDAR_HEIGHT = 1.73  # metres above the road, KITTI's Velodyne mount (Geiger et al., IJRR 2013)
FRAME_PERIOD = 0.1  # seconds: the HDL-64E spins at 10 Hz in KITTI


@dataclass(frozen=True)
class EgoPose:
    """World pose of the LiDAR: position (metres) and heading `yaw` (radians about +z; x forward, z up)."""

    x: float
    y: float
    z: float
    yaw: float

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z])

    def rotation(self) -> np.ndarray:
        """(3, 3) world-from-LiDAR rotation."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def matrix(self) -> np.ndarray:
        """(4, 4) world-from-LiDAR transform."""
        out = np.eye(4)
        out[:3, :3] = self.rotation()
        out[:3, 3] = self.position
        return out


@dataclass(frozen=True)
class TrajectoryConfig:
    """Ego motion along the street: speed (m/s) drawn per sequence, gentle weaving inside the lane."""

    min_speed: float = 6.0
    max_speed: float = 10.0
    weave_amplitude: float = 0.2  # metres
    weave_period: float = 60.0  # metres along the street


def ego_trajectory(frames: int, seed: int, config: TrajectoryConfig = TrajectoryConfig()) -> list[EgoPose]:
    """`frames` LiDAR poses at 10 Hz along the ego lane, starting at x = 0, deterministic by `seed`."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    rng = np.random.default_rng([seed, 0x7A])
    speed = rng.uniform(config.min_speed, config.max_speed)
    phase = rng.uniform(0, 2 * np.pi)
    k = 2 * np.pi / config.weave_period
    poses = []
    for i in range(frames):
        x = speed * FRAME_PERIOD * i
        y = EGO_LANE_Y + config.weave_amplitude * np.sin(k * x + phase)
        yaw = np.arctan(config.weave_amplitude * k * np.cos(k * x + phase))
        poses.append(EgoPose(float(x), float(y), LIDAR_HEIGHT, float(yaw)))
    return poses
