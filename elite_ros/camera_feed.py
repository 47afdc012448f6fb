"""The camera beside the LiDAR as a stream: recent images, the calibration, and scan <-> image pairing.

For a fusion checkpoint (docs/reference.md §14) the node and the bag tools feed every camera message in
here and ask, per scan, for the image nearest to the scan's stamp:

- approximate time matching: the image whose header stamp is nearest to the scan's, if they differ by at
  most the tolerance (`camera.sync_tolerance_ms`); the newest `IMAGE_BUFFER` images are kept;
- no such image (late, missing or stale), no CameraInfo yet, no LiDAR -> camera transform yet, or an image
  whose size is not the CameraInfo's: the scan gets no image and runs on the imputation path (never
  dropped); `counters` say how many scans ran with and without an image, and how many images came
  after their scan had already run without them (late).

Thread-safe: the node's image and scan callbacks run on different executor threads. No ROS import.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from elite_ros.camera import CameraModel, image_to_rgb

IMAGE_BUFFER = 8  # images kept (0.8 s of a 10 Hz camera: more than any useful tolerance)
MISSED_SCANS = 8  # stamps of scans that ran without an image, remembered to count late images


def stamp_ns(header) -> int:
    """A ROS 2 header's stamp (`stamp.sec`, `stamp.nanosec`) in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass
class CameraCounters:
    """Running totals: scans with / without an image, images received, images later than their scan."""

    with_image: int = 0
    without_image: int = 0
    images: int = 0
    late_images: int = 0


class CameraFeed:
    """Recent camera images and the calibration; `match(scan stamp)` -> (image, camera) or (None, None).

    tolerance_ns: largest |scan stamp - image stamp| of a pair. lidar_to_camera: (4, 4) LiDAR -> camera
    optical frame transform, or None until `set_extrinsic` (e.g. from TF).
    """

    def __init__(self, tolerance_ns: int, lidar_to_camera: np.ndarray | None = None) -> None:
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        self.tolerance_ns = int(tolerance_ns)
        self.counters = CameraCounters()
        #: why the last scan got no image ("" when it got one)
        self.last_reason = ""
        self._images: deque[tuple[int, np.ndarray]] = deque(maxlen=IMAGE_BUFFER)
        self._missed: deque[int] = deque(maxlen=MISSED_SCANS)
        self._info: tuple[np.ndarray, int, int] | None = None  # CameraInfo P (3, 4), width, height
        self._extrinsic = None if lidar_to_camera is None else np.asarray(lidar_to_camera, dtype=np.float64)
        self._camera: CameraModel | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- inputs
    def add_image(self, stamp: int, rgb: np.ndarray) -> None:
        """One (H, W, 3) uint8 RGB image taken at `stamp` ns."""
        with self._lock:
            self.counters.images += 1
            late = [s for s in self._missed if abs(s - stamp) <= self.tolerance_ns]
            if late:
                self.counters.late_images += 1
                for s in late:
                    self._missed.remove(s)
            self._images.append((int(stamp), rgb))

    def add_image_msg(self, msg) -> None:
        """A sensor_msgs/Image (rclpy or rosbags); an undecodable one raises ValueError (`image_to_rgb`)."""
        self.add_image(stamp_ns(msg.header), image_to_rgb(msg))

    def set_camera_info(self, info) -> None:
        """The camera's sensor_msgs/CameraInfo (P and image size; the latest one counts)."""
        p = np.asarray(info.p, dtype=np.float64).reshape(3, 4)
        with self._lock:
            if self._info is None or not np.array_equal(self._info[0], p) or self._info[1:] != (info.width,
                                                                                               info.height):
                self._info = (p, int(info.width), int(info.height))
                self._camera = None

    def set_extrinsic(self, lidar_to_camera: np.ndarray) -> None:
        """The (4, 4) LiDAR -> camera optical frame transform."""
        with self._lock:
            self._extrinsic = np.asarray(lidar_to_camera, dtype=np.float64)
            self._camera = None

    @property
    def has_extrinsic(self) -> bool:
        return self._extrinsic is not None

    @property
    def camera(self) -> CameraModel | None:
        """The calibrated camera, once CameraInfo and the extrinsic are both known."""
        with self._lock:
            return self._camera_locked()

    def _camera_locked(self) -> CameraModel | None:
        if self._camera is None and self._info is not None and self._extrinsic is not None:
            p, width, height = self._info
            self._camera = CameraModel(p[:, :3] @ self._extrinsic[:3, :], width, height)
        return self._camera

    # ------------------------------------------------------------------------------------------- pairing
    def match(self, scan_stamp: int) -> tuple[np.ndarray | None, CameraModel | None]:
        """(image, camera) for a scan taken at `scan_stamp` ns, or (None, None): see the module docstring."""
        with self._lock:
            camera = self._camera_locked()
            image = None
            if not self._images:
                reason = "no image received yet"
            else:
                stamp, nearest = min(self._images, key=lambda item: abs(item[0] - scan_stamp))
                offset_ms = (stamp - scan_stamp) / 1e6
                if abs(stamp - scan_stamp) > self.tolerance_ns:
                    reason = (f"nearest image {offset_ms:+.0f} ms from the scan "
                              f"(tolerance {self.tolerance_ns / 1e6:g} ms)")
                elif camera is None:
                    reason = ("no CameraInfo yet" if self._info is None
                              else "no LiDAR -> camera transform (camera.extrinsic or TF)")
                elif nearest.shape[:2] != (camera.height, camera.width):
                    reason = (f"image {nearest.shape[1]}x{nearest.shape[0]} but CameraInfo says "
                              f"{camera.width}x{camera.height}")
                else:
                    image, reason = nearest, ""
            self.last_reason = reason
            if image is None:
                self.counters.without_image += 1
                self._missed.append(int(scan_stamp))
                return None, None
            self.counters.with_image += 1
            return image, camera
