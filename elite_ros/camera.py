"""The camera as the runtime sees it: LiDAR -> pixel projection, camera models, images (no ROS import).

One home for the facts the training pipeline and the car share (the training side re-exports them):

- `project_points`: the reference's projection rule (docs/reference.md §2 step 3): points with x > 0 in
  the LiDAR frame, (x, y, z, 1) times a (3, 4) LiDAR -> pixel matrix, divided by depth, kept when
  0 < u < W and 0 < v < H (strict) and in front of the camera; pixels truncated to int64 (row, col);
- `projection_from`: CameraInfo's P (3, 4) and the LiDAR -> optical-frame transform (4, 4) ->
  P[:, :3] · T[:3] (P's rectified intrinsics; a stereo camera's offset is inside T, as kitti2bag and
  camera drivers publish it; for KITTI this is P2 · [R0_rect ·] Tr);
- `CameraModel`: one calibrated camera (matrix + image size), from CameraInfo + extrinsic;
- `image_to_rgb`: a `sensor_msgs/Image` (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB;
- `normalise_image`: RGB 0..255 -> float32 (value - mean) / std, channels first (the fusion student's input
  normalisation travels in its checkpoint: `CameraInput`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: the fusion student's default pixel normalisation: SAM's mean / std on 0..255 RGB (docs/reference.md §1
#: image_normalizer), the one the training pipeline already applies to every crop
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

_CHANNELS = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)), "bgra8": (4, (2, 1, 0)),
             "mono8": (1, (0, 0, 0)), "8UC3": (3, (0, 1, 2)), "8UC1": (1, (0, 0, 0))}
#: Image encodings `image_to_rgb` reads
IMAGE_ENCODINGS = tuple(sorted(_CHANNELS))


@dataclass(frozen=True)
class Projection:
    """Points of a scan that land inside an image.

    Attributes:
        index: (M,) int64 index of each projected point in the input point array.
        pixels: (M, 2) int64 (row, col) pixel of each projected point, truncated towards zero.
        uv: (M, 2) float64 sub-pixel (u = column, v = row) coordinates.
        depth: (M,) float64 depth along the camera's optical axis, metres.
    """

    index: np.ndarray
    pixels: np.ndarray
    uv: np.ndarray
    depth: np.ndarray


def project_points(xyz: np.ndarray, projection: np.ndarray, width: int, height: int) -> Projection:
    """Project LiDAR points (N, 3) metres with a (3, 4) matrix into a width x height image.

    Keeps points in front of the sensor (x > 0, as the reference does) whose pixel lies strictly
    inside the image (0 < u < width, 0 < v < height).
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(f"xyz must be (N, 3), got {xyz.shape}")
    projection = np.asarray(projection, dtype=np.float64)
    if projection.shape != (3, 4):
        raise ValueError(f"projection must be (3, 4), got {projection.shape}")
    front = np.flatnonzero(xyz[:, 0] > 0)
    cam = xyz[front, :3] @ projection[:, :3].T + projection[:, 3]
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = cam[:, :2] / depth[:, None]
    inside = (depth > 0) & (uv[:, 0] > 0) & (uv[:, 0] < width) & (uv[:, 1] > 0) & (uv[:, 1] < height)
    uv = uv[inside]
    pixels = uv[:, ::-1].astype(np.int64)  # (row, col), truncation as in the reference
    return Projection(index=front[inside].astype(np.int64), pixels=pixels, uv=uv, depth=depth[inside])


def projection_from(p: np.ndarray, lidar_to_optical: np.ndarray) -> np.ndarray:
    """CameraInfo P (3, 4) and the LiDAR -> image optical frame transform (4, 4) -> (3, 4) P[:, :3] · T[:3]."""
    return np.asarray(p, dtype=np.float64).reshape(3, 4)[:, :3] @ np.asarray(lidar_to_optical)[:3, :]


@dataclass(frozen=True)
class CameraModel:
    """One calibrated camera: the (3, 4) LiDAR -> pixel matrix and the image size in pixels."""

    projection: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        matrix = np.asarray(self.projection, dtype=np.float64)
        if matrix.shape != (3, 4) or not np.isfinite(matrix).all():
            raise ValueError(f"CameraModel.projection must be a finite (3, 4) matrix, got {matrix.shape}")
        if int(self.width) < 1 or int(self.height) < 1:
            raise ValueError(f"CameraModel image size must be positive, got {self.width} x {self.height}")
        object.__setattr__(self, "projection", matrix)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_camera_info(cls, info, lidar_to_optical: np.ndarray) -> CameraModel:
        """A `sensor_msgs/CameraInfo` (its P, width, height) and the (4, 4) LiDAR -> optical-frame transform."""
        return cls(projection_from(np.asarray(info.p, dtype=np.float64), lidar_to_optical),
                   int(info.width), int(info.height))

    def project(self, xyz: np.ndarray) -> Projection:
        """The points (N, 3) metres, LiDAR frame, that this camera sees (`project_points`)."""
        return project_points(xyz, self.projection, self.width, self.height)


#: a KITTI-like colour camera (KITTI odometry seq 00's P2 intrinsics and image size) for `forward_camera`
KITTI_FOCAL_PX, KITTI_CENTRE_PX, KITTI_IMAGE_SIZE = 718.856, (607.1928, 185.2157), (1242, 375)
#: LiDAR axes (x forward, y left, z up) -> optical axes (x right, y down, z forward)
LIDAR_TO_OPTICAL_ROTATION = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def forward_camera(width: int = KITTI_IMAGE_SIZE[0], height: int = KITTI_IMAGE_SIZE[1],
                   focal: float = KITTI_FOCAL_PX) -> CameraModel:
    """A pinhole camera at the LiDAR's origin looking along +x, principal point at KITTI's (scaled to the
    image size): the warm-up's and the tests' camera when no calibration is at hand."""
    cx = KITTI_CENTRE_PX[0] * width / KITTI_IMAGE_SIZE[0]
    cy = KITTI_CENTRE_PX[1] * height / KITTI_IMAGE_SIZE[1]
    intrinsics = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    return CameraModel(np.hstack([intrinsics @ LIDAR_TO_OPTICAL_ROTATION, np.zeros((3, 1))]), width, height)


def image_to_rgb(msg) -> np.ndarray:
    """`sensor_msgs/Image` (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB (a copy)."""
    encoding = msg.encoding
    if encoding not in _CHANNELS:
        raise ValueError(f"Image encoding {encoding!r} is not supported (use one of {sorted(_CHANNELS)})")
    channels, order = _CHANNELS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    raw = msg.data  # bytes (rclpy), a numpy array (rosbags) or a list
    data = (np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview))
            else np.asarray(raw, dtype=np.uint8).reshape(-1))
    if step < width * channels or len(data) < step * height:
        raise ValueError(f"Image {width}x{height} {encoding}: step {step} / {len(data)} bytes too small")
    rows = data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    return np.ascontiguousarray(rows[:, :, list(order)])


@dataclass(frozen=True)
class CameraInput:
    """What camera input a fusion checkpoint expects (its metadata's ``camera``): (H, W, 3) RGB 0..255,
    normalised as (value - pixel_mean) / pixel_std per channel; a camera is optional (no image = the
    imputation path)."""

    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    encoding: str = "rgb8"
    required: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or not all(s > 0 for s in self.pixel_std):
            raise ValueError(f"CameraInput: pixel_mean / pixel_std must be 3 values (std > 0), got "
                             f"{self.pixel_mean} / {self.pixel_std}")


def normalise_image(rgb: np.ndarray | Tensor, mean: tuple[float, float, float] = PIXEL_MEAN,
                    std: tuple[float, float, float] = PIXEL_STD, device: torch.device | str = "cpu") -> Tensor:
    """(H, W, 3) uint8 RGB (numpy or torch) -> (3, H, W) float32 (value - mean) / std on `device`."""
    # a bag's or a message's buffer may be read-only: copied only then (torch wants a writable array)
    image = torch.from_numpy(np.require(rgb, requirements=["C", "W"])) if isinstance(rgb, np.ndarray) else rgb
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got {tuple(image.shape)}")
    image = image.to(device).permute(2, 0, 1).float()
    mean_t = torch.tensor(mean, dtype=torch.float32, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=image.device).view(3, 1, 1)
    return (image - mean_t) / std_t
