"""PolarMix: two labelled LiDAR frames mixed in polar coordinates (ref §13; Xiao et al., "PolarMix: A
General Data Augmentation Technique for LiDAR Point Clouds", NeurIPS 2022, written here from the paper).

Two operations on a frame A and a partner frame B of the same dataset:
1. scene swap: A's points whose azimuth lies in a random sector are
   replaced by B's points of that sector (half a turn, PolarMix's SemanticKITTI setting);
2. instance rotate-paste: B's points of the object classes (car .. motorcyclist) are copied, each copy
   turned about the sensor's z axis by a random angle, and added to A.
Both keep every point's range and height, so the mix still reads as one sensor's scan at one mounting.
A's camera image, projection and pseudo labels stay; only A's own surviving points keep their link to
the image (`Frame.camera_mask`): B's points were never seen by A's camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from elite_ros.labels import SEMANTIC_KITTI, to_training_ids
from elite_ros_training.data.augment import RigidAugmentation
from elite_ros_training.data.frame import Frame

#: PolarMix's scene-level swap on SemanticKITTI: a sector of half a turn at a uniformly random start
SECTOR_WIDTH_RAD = math.pi
#: PolarMix's instance-level rotate-paste (its angles Omega): one copy per range, turned by an angle uniform in it
COPY_ROTATION_RANGES_RAD = ((0.0, 2.0 * math.pi / 3.0), (2.0 * math.pi / 3.0, 4.0 * math.pi / 3.0))
#: PolarMix's pasted classes on SemanticKITTI: the eight object (thing) classes
PASTE_CLASSES = ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist")


@dataclass(frozen=True)
class PolarMixConfig:
    """PolarMix in the training pipeline (`data.pipeline.polar_mix`; probability 0 = off, the default).

    Attributes:
        probability: chance that a training frame is mixed with a partner frame (ours; 0 .. 1).
        sector_width: width of the swapped azimuth sector, radians (0 = no scene swap).
        paste_classes: class names whose points are rotate-pasted from the partner (empty = no paste).
    """

    probability: float = 0.0
    sector_width: float = SECTOR_WIDTH_RAD
    paste_classes: tuple[str, ...] = PASTE_CLASSES

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"polar_mix.probability must lie in [0, 1], got {self.probability}")
        if not 0.0 <= self.sector_width <= 2.0 * math.pi:
            raise ValueError(f"polar_mix.sector_width must lie in [0, 2 pi] radians, got {self.sector_width}")
        SEMANTIC_KITTI.ids_of(self.paste_classes)  # KeyError naming an unknown class


def in_sector(xyz: np.ndarray, start: float, width: float) -> np.ndarray:
    """(N,) bool: points whose azimuth atan2(y, x) lies in [start, start + width) (mod 2 pi); xyz (N, >=2)."""
    offset = np.mod(np.arctan2(xyz[:, 1], xyz[:, 0]) - start, 2.0 * math.pi)
    return offset < width


def rotated_about_z(points: np.ndarray, angle: float) -> np.ndarray:
    """(N, 4) copy of `points` (x, y, z metres + intensity) turned by `angle` radians about the z axis."""
    out = points.copy()
    out[:, :3] = replace(RigidAugmentation.identity(), angle=angle).apply(points)
    return out


def polar_mix(frame: Frame, partner: Frame, rng: np.random.Generator, config: PolarMixConfig) -> Frame:
    """`frame` mixed with `partner` (both labelled; otherwise `frame` comes back unchanged).

    Order of the result's points: `frame`'s outside the sector, `partner`'s inside it, then one block of
    pasted partner points per rotation range. Every draw comes from `rng`.
    """
    if frame.labels is None or partner.labels is None:
        return frame
    start = float(rng.uniform(-math.pi, math.pi))
    keep = ~in_sector(frame.points, start, config.sector_width)
    taken = in_sector(partner.points, start, config.sector_width)
    paste_ids = SEMANTIC_KITTI.ids_of(config.paste_classes)
    things = np.isin(to_training_ids(partner.labels), paste_ids)
    blocks = [frame.points[keep], partner.points[taken]]
    label_blocks = [frame.labels[keep], partner.labels[taken]]
    if things.any():
        for low, high in COPY_ROTATION_RANGES_RAD:
            blocks.append(rotated_about_z(partner.points[things], float(rng.uniform(low, high))))
            label_blocks.append(partner.labels[things])
    own = frame.camera_mask[keep] if frame.camera_mask is not None else np.ones(int(keep.sum()), bool)
    camera_mask = np.zeros(sum(len(b) for b in blocks), bool)
    camera_mask[: len(own)] = own
    return Frame(
        frame_id=f"{frame.frame_id}+{partner.frame_id}",
        points=np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32),
        labels=np.concatenate(label_blocks).astype(np.uint32),
        image=frame.image,
        projection=frame.projection,
        pseudo_labels=frame.pseudo_labels,
        timestamp_ns=frame.timestamp_ns,
        camera_mask=camera_mask,
    )
