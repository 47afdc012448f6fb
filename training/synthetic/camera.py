"""The left colour camera (KITTI cam 2): one ray per pixel through the same scene as the LiDAR.

Calibration values are KITTI odometry sequence 00's `calib.txt` (Geiger et al., CVPR 2012), read from
`shared/data/kitti_odometry/seq00/calib.txt`: P0..P3 are the rectified projection matrices, `Tr` maps
Velodyne coordinates to rectified camera-0 coordinates. A LiDAR point X projects to pixel
``P2 · Tr · [X, 1]``, and the camera ray of pixel (u, v) is exactly the set of points that project there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elite_ros.labels import to_training_ids

from .materials import albedo
from .noise import value_noise
from .pose import EgoPose
from .raycast import NOTHING, cast, hit_surface
from .scene import Scene

IMAGE_WIDTH, IMAGE_HEIGHT = 1242, 375  # KITTI odometry colour images, pixels

# KITTI odometry seq 00 calib.txt (P2: fx = fy = 718.856, cx = 607.1928, cy = 185.2157, P2[0,3] = 45.38225)
KITTI_P0 = np.array([[718.856, 0.0, 607.1928, 0.0], [0.0, 718.856, 185.2157, 0.0], [0.0, 0.0, 1.0, 0.0]])
KITTI_P1 = np.array([[718.856, 0.0, 607.1928, -386.1448], [0.0, 718.856, 185.2157, 0.0], [0.0, 0.0, 1.0, 0.0]])
KITTI_P2 = np.array([[718.856, 0.0, 607.1928, 45.38225], [0.0, 718.856, 185.2157, -0.1130887],
                     [0.0, 0.0, 1.0, 0.003779761]])
KITTI_P3 = np.array([[718.856, 0.0, 607.1928, -337.2877], [0.0, 718.856, 185.2157, 2.369057],
                     [0.0, 0.0, 1.0, 0.004915215]])
KITTI_TR = np.array([
    [4.276802385584e-04, -9.999672484946e-01, -8.084491683471e-03, -1.198459927713e-02],
    [-7.210626507497e-03, 8.081198471645e-03, -9.999413164504e-01, -5.403984729748e-02],
    [9.999738645903e-01, 4.859485810390e-04, -7.206933692422e-03, -2.921968648686e-01],
])  # Velodyne -> rectified camera 0

CAMERA_RANGE = 300.0  # metres rendered before the sky / haze takes over
SUN_DIRECTION = np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])
HORIZON_RGB = np.array([0.80, 0.84, 0.88])
ZENITH_RGB = np.array([0.36, 0.55, 0.84])
HAZE_DISTANCE = 400.0  # metres: e-folding distance of the aerial perspective
SENSOR_NOISE_STD = 0.012  # image noise, 0..1 scale


@dataclass(frozen=True)
class CameraFrame:
    """One rendered image and its ground truth.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        class_map: (H, W) uint8 training id per pixel (0 = sky / nothing).
        instance_map: (H, W) uint16 instance id per pixel (0 = stuff or sky).
        distance: (H, W) float32 ray length to the surface, metres (inf = sky).
    """

    image: np.ndarray
    class_map: np.ndarray
    instance_map: np.ndarray
    distance: np.ndarray


def camera_rays_lidar_frame(p2: np.ndarray = KITTI_P2, tr: np.ndarray = KITTI_TR, width: int = IMAGE_WIDTH,
                            height: int = IMAGE_HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and unit pixel-centre ray directions (H, W, 3), in the LiDAR frame, metres."""
    k, p4 = p2[:, :3], p2[:, 3]
    k_inv = np.linalg.inv(k)
    centre_cam0 = -k_inv @ p4  # rectified frame: P2 = K [I | t]
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    dirs_cam0 = pix @ k_inv.T
    cam0_to_lidar = np.linalg.inv(np.vstack([tr, [0.0, 0.0, 0.0, 1.0]]))  # exact: Tr is only nearly orthonormal
    centre = cam0_to_lidar[:3, :3] @ centre_cam0 + cam0_to_lidar[:3, 3]
    dirs = dirs_cam0 @ cam0_to_lidar[:3, :3].T
    return centre, dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


class PinholeCover:
    """Which pixels of a pinhole camera (3x4 world-to-pixel matrix) can see an axis-aligned box."""

    _CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], np.float64)
    _EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]

    def __init__(self, world_to_pixel: np.ndarray, width: int, height: int, near: float = 0.05) -> None:
        self.m = world_to_pixel
        self.width, self.height, self.near = width, height, near

    def __call__(self, lo: np.ndarray, hi: np.ndarray):
        corners = lo + self._CORNERS * (hi - lo)
        cam = corners @ self.m[:, :3].T + self.m[:, 3]
        w = cam[:, 2]
        front = w > self.near
        if not front.any():
            return None
        points = [cam[front]]
        if not front.all():  # clip the box by the near plane: add where its edges cross it
            for a, b in self._EDGES:
                if front[a] != front[b]:
                    s = (self.near - w[a]) / (w[b] - w[a])
                    points.append((cam[a] + s * (cam[b] - cam[a]))[None, :])
        pts = np.concatenate(points)
        uv = pts[:, :2] / pts[:, 2:3]
        c0, c1 = int(np.floor(uv[:, 0].min())) - 1, int(np.ceil(uv[:, 0].max())) + 2
        r0, r1 = int(np.floor(uv[:, 1].min())) - 1, int(np.ceil(uv[:, 1].max())) + 2
        c0, c1 = max(c0, 0), min(c1, self.width)
        r0, r1 = max(r0, 0), min(r1, self.height)
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)


_RAYS = None


def _rays() -> tuple[np.ndarray, np.ndarray]:
    global _RAYS
    if _RAYS is None:
        _RAYS = camera_rays_lidar_frame()
    return _RAYS


def sky(dirs: np.ndarray) -> np.ndarray:
    """(n, 3) unit world directions -> (n, 3) sky colour: a blue gradient with soft clouds."""
    el = np.clip(dirs[:, 2], 0.0, 1.0)
    rgb = HORIZON_RGB + (ZENITH_RGB - HORIZON_RGB) * np.clip(el * 3.0, 0, 1)[:, None]
    az = np.arctan2(dirs[:, 1], dirs[:, 0])
    cloud = value_noise(az * 12.0, el * 40.0, seed=31) * 0.6 + value_noise(az * 30.0, el * 90.0, seed=32) * 0.4
    cover = np.clip((cloud - 0.55) * 3.0, 0, 1) * np.clip(el * 20.0, 0, 1)
    return rgb * (1 - cover[:, None]) + 0.95 * cover[:, None]


def render(scene: Scene, pose: EgoPose, rng: np.random.Generator) -> CameraFrame:
    """Render the camera image and per-pixel classes for the LiDAR at `pose`."""
    centre, dirs_lidar = _rays()
    rot = pose.rotation()
    origin = rot @ centre + pose.position
    dirs = dirs_lidar @ rot.T
    world_to_lidar = np.linalg.inv(pose.matrix())
    world_to_pixel = KITTI_P2 @ np.vstack([KITTI_TR, [0, 0, 0, 1]]) @ world_to_lidar
    cover = PinholeCover(world_to_pixel, IMAGE_WIDTH, IMAGE_HEIGHT)
    hits = cast(scene, origin, dirs, cover, CAMERA_RANGE)
    surf = hit_surface(scene, hits, origin, dirs)

    flat_dirs = dirs.reshape(-1, 3)
    rgb = np.empty((flat_dirs.shape[0], 3))
    open_sky = (hits.primitive == NOTHING).reshape(-1)
    rgb[open_sky] = sky(flat_dirs[open_sky])
    hit_dirs = flat_dirs[surf.flat_index]
    normal = surf.sample.normal
    facing = np.where(((normal * hit_dirs).sum(axis=1) > 0)[:, None], -normal, normal)  # two-sided lighting
    light = 0.45 + 0.55 * np.clip(facing @ SUN_DIRECTION, 0.0, 1.0) + 0.08 * facing[:, 2]
    colour = albedo(surf.sample) * light[:, None]
    haze = 1.0 - np.exp(-hits.t.reshape(-1)[surf.flat_index] / HAZE_DISTANCE)
    rgb[surf.flat_index] = colour * (1 - haze[:, None]) + HORIZON_RGB * haze[:, None]
    rgb += rng.normal(0.0, SENSOR_NOISE_STD, rgb.shape)
    image = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).reshape(IMAGE_HEIGHT, IMAGE_WIDTH, 3)

    class_map = np.zeros(IMAGE_HEIGHT * IMAGE_WIDTH, np.uint8)
    class_map[surf.flat_index] = to_training_ids(surf.raw_label)
    instance_map = np.zeros(IMAGE_HEIGHT * IMAGE_WIDTH, np.uint16)
    instance_map[surf.flat_index] = surf.instance
    return CameraFrame(image=image, class_map=class_map.reshape(IMAGE_HEIGHT, IMAGE_WIDTH),
                       instance_map=instance_map.reshape(IMAGE_HEIGHT, IMAGE_WIDTH),
                       distance=hits.t.astype(np.float32))
