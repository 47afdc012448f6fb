"""The ego vehicle's LiDAR pose on the street, and the ego trajectory of a sequence."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ground import ZoneMap
from .primitives import rotation_matrix

LIDAR_HEIGHT = 1.73  # metres above the road, KITTI's Velodyne mount (Geiger et al., IJRR 2013)
FRAME_PERIOD = 0.1  # seconds: the HDL-64E spins at 10 Hz in KITTI
DEFAULT_LANE_Y = -1.75  # metres: the ego lane centre of a 7 m street (when no street plan is given)
WHEELBASE_HALF, TRACK_HALF = 1.35, 0.78  # metres: where the ego car's wheels touch the ground (a ~2.7 m
# wheelbase, the KITTI recording car: VW Passat B6)


@dataclass(frozen=True)
class EgoPose:
    """World pose of the LiDAR: position (metres), heading `yaw` (radians about +z; x forward, z up),
    `pitch` (nose up > 0) and `roll` (left side up > 0), radians."""

    x: float
    y: float
    z: float
    yaw: float
    pitch: float = 0.0
    roll: float = 0.0

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z])

    @property
    def tilt(self) -> float:
        """Upper bound of the angle between the LiDAR's z axis and the world's +z, radians."""
        return abs(self.pitch) + abs(self.roll)

    def rotation(self) -> np.ndarray:
        """(3, 3) world-from-LiDAR rotation."""
        return rotation_matrix(self.yaw, self.pitch, self.roll)

    def matrix(self) -> np.ndarray:
        """(4, 4) world-from-LiDAR transform."""
        out = np.eye(4)
        out[:3, :3] = self.rotation()
        out[:3, 3] = self.position
        return out


@dataclass(frozen=True)
class TrajectoryConfig:
    """Ego motion along the street: speed (m/s) drawn per sequence, gentle weaving inside the lane, the
    LiDAR's mount tilt (drawn per sequence) and body motion (braking / acceleration pitch, roll) on top of
    the ground's slope, radians.

    The mount tilt is the road plane's slope in the sensor frame of the real KITTI scans (least-squares
    plane through the road within 3-10 m; benchmarks/synthetic_realism.py `road_plane`): the road rises
    ahead by 0.3-1.6 deg and falls to the left by -0.8..2.9 deg in the five scans measured (SemanticKITTI
    spvnas and Open3D-ML scans, KITTI odometry 00 frames 0-1, KITTI object 000000). Part of the roll is the
    camber of the far lane (~1 deg), so the HDL-64E sits pitched nose-down ~1.2 deg and rolled left-side-up
    ~0.8 deg relative to the car's wheels.
    """

    min_speed: float = 6.0
    max_speed: float = 10.0
    weave_amplitude: float = 0.2  # metres
    weave_period: float = 60.0  # metres along the street
    mount_pitch: tuple[float, float] = (float(np.deg2rad(-1.2)), float(np.deg2rad(0.4)))  # mean, std
    mount_roll: tuple[float, float] = (float(np.deg2rad(0.8)), float(np.deg2rad(0.8)))
    body_pitch: float = float(np.deg2rad(0.5))  # largest extra pitch (suspension; a car braking pitches ~1 deg)
    body_roll: float = float(np.deg2rad(0.3))
    body_period: float = 40.0  # metres along the street


def trajectory_x(frames: int, seed: int, config: TrajectoryConfig = TrajectoryConfig()) -> np.ndarray:
    """(frames,) x of the LiDAR along the street at 10 Hz from x = 0, metres (the speed depends on `seed`)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    speed = np.random.default_rng([seed, 0x7A]).uniform(config.min_speed, config.max_speed)
    return speed * FRAME_PERIOD * np.arange(frames)


def ego_trajectory(frames: int, seed: int, config: TrajectoryConfig = TrajectoryConfig(),
                   ground: ZoneMap | None = None, lane_y: float = DEFAULT_LANE_Y) -> list[EgoPose]:
    """`frames` LiDAR poses at 10 Hz along the ego lane `lane_y`, starting at x = 0, deterministic by `seed`.

    On a `ground`, the car stands on it: the LiDAR is LIDAR_HEIGHT above the mean height of the four
    wheel contacts, pitched and rolled with them, plus a slow body motion.
    """
    xs = trajectory_x(frames, seed, config)
    rng = np.random.default_rng([seed, 0x7A])
    rng.uniform(config.min_speed, config.max_speed)  # the speed (drawn by trajectory_x)
    phase = rng.uniform(0, 2 * np.pi)
    body_phase = rng.uniform(0, 2 * np.pi, 2)
    body = rng.uniform(0.3, 1.0, 2) * np.array([config.body_pitch, config.body_roll])
    mount_pitch = float(np.clip(rng.normal(*config.mount_pitch), config.mount_pitch[0] - 2 * config.mount_pitch[1],
                                config.mount_pitch[0] + 2 * config.mount_pitch[1]))
    mount_roll = float(np.clip(rng.normal(*config.mount_roll), config.mount_roll[0] - 2 * config.mount_roll[1],
                               config.mount_roll[0] + 2 * config.mount_roll[1]))
    k = 2 * np.pi / config.weave_period
    kb = 2 * np.pi / config.body_period
    poses = []
    for x in xs:
        y = lane_y + config.weave_amplitude * np.sin(k * x + phase)
        yaw = float(np.arctan(config.weave_amplitude * k * np.cos(k * x + phase)))
        if ground is None:
            poses.append(EgoPose(float(x), float(y), LIDAR_HEIGHT, yaw))
            continue
        c, s = np.cos(yaw), np.sin(yaw)
        fx, fy = WHEELBASE_HALF * c, WHEELBASE_HALF * s
        lx, ly = -TRACK_HALF * s, TRACK_HALF * c
        h = ground.height
        front, back = h(x + fx, y + fy), h(x - fx, y - fy)
        left, right = h(x + lx, y + ly), h(x - lx, y - ly)
        pitch = np.arctan2(front - back, 2 * WHEELBASE_HALF) + body[0] * np.sin(kb * x + body_phase[0])
        roll = np.arctan2(left - right, 2 * TRACK_HALF) + body[1] * np.sin(0.7 * kb * x + body_phase[1])
        # the LiDAR sits LIDAR_HEIGHT above the centre of the wheel contacts along the car's up axis
        up = rotation_matrix(yaw, float(pitch), float(roll))[:, 2]
        pitch, roll = pitch + mount_pitch, roll + mount_roll
        base = np.array([x, y, 0.25 * (front + back + left + right)])
        pos = base + LIDAR_HEIGHT * up
        poses.append(EgoPose(float(pos[0]), float(pos[1]), float(pos[2]), yaw, float(pitch), float(roll)))
    return poses
