"""One synchronised training frame (LiDAR scan + labels + camera image + calibration), whatever its source.

SemanticKITTI folders (`semantickitti.SequenceFolder`) and rosbags (`bag_dataset.BagFrames`) both produce
`Frame`s; the per-sample pipeline (`pipeline.build_sample`) consumes them, so the augmentation and
projection code never knows where a frame came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Frame:
    """A LiDAR scan with what was recorded with it.

    Attributes:
        frame_id: name of the frame (file stem, or the bag's cloud index as a 6-digit string).
        points: (N, 4) float32 x, y, z (metres, LiDAR frame) and intensity (as recorded, KITTI 0..1).
        labels: (N,) uint32 raw SemanticKITTI `.label` values (semantic | instance << 16), or None.
        image: (H, W, 3) uint8 RGB left colour image, or None.
        projection: (3, 4) float64 LiDAR -> pixel matrix (P2 · [R0_rect ·] Tr), or None without a camera.
        pseudo_labels: (2, H, W) uint16 SAM-PLG (semantic training id, instance id) maps, or None.
        timestamp_ns: acquisition time of the scan, nanoseconds, or None when unknown.
        camera_mask: (N,) bool, the points the image belongs to (the others get no pixel), or None = all;
            a mixed frame (`polarmix`) holds points that its camera never saw.
    """

    frame_id: str
    points: np.ndarray
    labels: np.ndarray | None = None
    image: np.ndarray | None = None
    projection: np.ndarray | None = None
    pseudo_labels: np.ndarray | None = None
    timestamp_ns: int | None = None
    camera_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 4 or self.points.dtype != np.float32:
            raise ValueError(f"frame {self.frame_id}: points must be (N, 4) float32, "
                             f"got {self.points.shape} {self.points.dtype}")
        if self.labels is not None and self.labels.shape != (len(self.points),):
            raise ValueError(f"frame {self.frame_id}: {len(self.labels)} labels for {len(self.points)} points")
        if self.camera_mask is not None and (self.camera_mask.shape != (len(self.points),)
                                             or self.camera_mask.dtype != np.bool_):
            raise ValueError(f"frame {self.frame_id}: camera_mask must be ({len(self.points)},) bool, "
                             f"got {self.camera_mask.shape} {self.camera_mask.dtype}")
        image = self.image
        if image is not None and (image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8):
            raise ValueError(f"frame {self.frame_id}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if self.projection is not None and self.projection.shape != (3, 4):
            raise ValueError(f"frame {self.frame_id}: projection must be (3, 4), got {self.projection.shape}")
        if self.pseudo_labels is not None:
            if self.image is None or self.pseudo_labels.shape != (2, *self.image.shape[:2]):
                raise ValueError(
                    f"frame {self.frame_id}: pseudo labels {self.pseudo_labels.shape} do not match the image "
                    f"{None if self.image is None else self.image.shape[:2]} (expected (2, H, W))"
                )


@runtime_checkable
class FrameSource(Protocol):
    """Random access to frames: what the training dataset wraps."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Frame: ...


class ConcatFrames:
    """Several frame sources (e.g. SemanticKITTI sequences 00-07, 09, 10) seen as one."""

    def __init__(self, sources: list[FrameSource]) -> None:
        if not sources:
            raise ValueError("ConcatFrames needs at least one frame source")
        self.sources = list(sources)
        self._offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames")
        index %= len(self)
        source = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self.sources[source][index - int(self._offsets[source])]
