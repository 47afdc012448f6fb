"""Tiny labelled LiDAR + camera frames for training-loop tests (seconds, not minutes).

Points lie in front of the car (so most project into the KITTI camera) and carry a class that geometry
decides (ground by height, then car / vegetation / building by lateral offset), so a few steps can
already lower the loss. Images are the class palette with noise; pseudo labels paint the same classes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import DATA
from PIL import Image

from elite_ros.labels import palette_rgb, to_raw_ids
from elite_ros_training.data.frame import Frame
from elite_ros_training.data.projection import project_points
from elite_ros_training.data.semantickitti import read_calib

CALIB = DATA / "kitti_odometry" / "seq00" / "calib.txt"  # real KITTI odometry calibration (P2, Tr)
PROJECTION = read_calib(CALIB).projection
IMAGE_WIDTH, IMAGE_HEIGHT = 1241, 376  # KITTI odometry sequence 00 colour images
ROAD, CAR, VEGETATION, BUILDING = 9, 1, 15, 13  # training ids


def tiny_points(seed: int, count: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 4) float32 x y z intensity, training ids (N,) int64) of one frame."""
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.uniform(3.0, 40.0, count), rng.uniform(-12.0, 12.0, count),
                           rng.uniform(-2.0, 1.5, count)]).astype(np.float32)
    ids = np.where(xyz[:, 2] < -1.4, ROAD, np.where(np.abs(xyz[:, 1]) < 4.0, CAR,
                   np.where(xyz[:, 1] > 0, VEGETATION, BUILDING)))
    intensity = np.where(ids == ROAD, 0.2, 0.6) + rng.normal(0, 0.05, count)
    return np.column_stack([xyz, intensity]).astype(np.float32), ids.astype(np.int64)


def tiny_frame(seed: int, count: int = 2000, camera: bool = True, pseudo: bool = False) -> Frame:
    points, ids = tiny_points(seed, count)
    labels = to_raw_ids(ids).astype(np.uint32)
    if not camera:
        return Frame(frame_id=f"{seed:06d}", points=points, labels=labels)
    rng = np.random.default_rng(seed + 1000)
    class_map = np.full((IMAGE_HEIGHT, IMAGE_WIDTH), BUILDING, dtype=np.int64)
    class_map[IMAGE_HEIGHT // 2:] = ROAD
    projected = project_points(points[:, :3], PROJECTION, IMAGE_WIDTH, IMAGE_HEIGHT)
    class_map[projected.pixels[:, 0], projected.pixels[:, 1]] = ids[projected.index]
    image = np.clip(palette_rgb()[class_map].astype(np.int16) + rng.integers(-20, 20, class_map.shape + (3,)),
                    0, 255).astype(np.uint8)
    pseudo_labels = np.stack([class_map, np.zeros_like(class_map)]).astype(np.uint16) if pseudo else None
    return Frame(frame_id=f"{seed:06d}", points=points, labels=labels, image=image, projection=PROJECTION,
                 pseudo_labels=pseudo_labels)


class TinyFrames:
    """A FrameSource of `count` tiny frames (seeds first_seed, first_seed + 1, ...)."""

    def __init__(self, count: int, first_seed: int = 0, points: int = 2000, camera: bool = True,
                 pseudo: bool = False) -> None:
        self.count, self.first_seed, self.points, self.camera, self.pseudo = count, first_seed, points, camera, pseudo

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Frame:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return tiny_frame(self.first_seed + index, self.points, self.camera, self.pseudo)


def write_tiny_sequence(folder: Path, count: int, first_seed: int = 0, points: int = 2000) -> Path:
    """The tiny frames as a SemanticKITTI sequence folder (velodyne, labels, image_2, calib.txt)."""
    for sub in ("velodyne", "labels", "image_2"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "calib.txt").write_text(CALIB.read_text())
    for index in range(count):
        frame = tiny_frame(first_seed + index, points)
        name = f"{index:06d}"
        frame.points.tofile(folder / "velodyne" / f"{name}.bin")
        frame.labels.tofile(folder / "labels" / f"{name}.label")
        Image.fromarray(frame.image).save(folder / "image_2" / f"{name}.png")
    return folder


#: config overrides that make a run tiny: an 8-channel student, a 4-block 32-wide ViT on a 256 x 128 crop
TINY_TEACHER = {
    "encoder": {"img_size": 256, "patch_size": 16, "embed_dim": 32, "depth": 4, "num_heads": 2, "window_size": 4,
                "global_attn_indexes": [1, 3], "tap_indexes": [0, 1, 2, 3], "token_cut": True},
    "pooled_channels": 8,
}
TINY = {
    "data": {"batch_size": 2, "val_batch_size": 2, "num_workers": 0, "class_counts": None,
             "pipeline": {"crop_size": [256, 128]}},
    "student": {"architecture": {"hidden_channels": 8, "decoder_channels": 16}},
    "optim": {"lr": 0.05, "warmup_steps": 0},
    "trainer": {"max_epochs": 1, "log_every_n_steps": 1},
}
