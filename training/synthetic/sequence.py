"""A synthetic drive: ego poses + scene -> frames (scan + image), written as a SemanticKITTI sequence folder.

Folder layout (SemanticKITTI / KITTI odometry):

    calib.txt            P0..P3 and Tr (KITTI odometry seq 00 values)
    poses.txt            camera-0 pose of each frame in the first camera-0 frame, 3x4 row-major per line
    times.txt            seconds, 10 Hz
    velodyne/NNNNNN.bin  float32 (N, 4): x, y, z, intensity in 0..1
    labels/NNNNNN.label  uint32 (N,): raw semantic id | instance id << 16
    image_2/NNNNNN.png   1242 x 375 RGB
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from elite_ros.atomic import atomic_dir
from elite_ros_training.data.semantickitti import pseudo_label_path, save_pseudo_labels

from .camera import CAMERA_RANGE, KITTI_P0, KITTI_P1, KITTI_P2, KITTI_P3, KITTI_TR, CameraFrame, render
from .lidar import LidarConfig, LidarScan, scan
from .pose import FRAME_PERIOD, EgoPose, TrajectoryConfig, ego_trajectory, trajectory_x
from .scene import Scene, SceneConfig, generate_scene

SCENE_MARGIN_BEHIND = 130.0  # metres of street generated behind the first pose (> LiDAR range)
# metres ahead of the last pose: beyond the camera's range, so a frame does not depend on the drive's length
SCENE_MARGIN_AHEAD = CAMERA_RANGE + 10.0


@dataclass(frozen=True)
class SyntheticFrame:
    """Frame `index` of a sequence: the LiDAR pose, its scan and the camera image of the same instant."""

    index: int
    pose: EgoPose
    scan: LidarScan
    camera: CameraFrame


@dataclass
class SyntheticSequence:
    """A deterministic drive of `frames` frames for `seed` (frames can be rendered in any order)."""

    frames: int
    seed: int
    lidar: LidarConfig = field(default_factory=LidarConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        xs = trajectory_x(self.frames, self.seed, self.trajectory)
        config = SceneConfig(x_min=float(xs[0]) - SCENE_MARGIN_BEHIND, x_max=float(xs[-1]) + SCENE_MARGIN_AHEAD)
        self.scene: Scene = generate_scene(self.seed, config)
        self.poses: list[EgoPose] = ego_trajectory(self.frames, self.seed, self.trajectory, self.scene.ground,
                                                   self.scene.plan.ego_lane_y)

    def __len__(self) -> int:
        return self.frames

    def __iter__(self) -> Iterator[SyntheticFrame]:
        return (self.frame(i) for i in range(self.frames))

    def frame(self, index: int) -> SyntheticFrame:
        """Render frame `index` (its noise depends only on the seed and the index)."""
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} outside 0..{self.frames - 1}")
        rng = np.random.default_rng([self.seed, index, 1])
        pose = self.poses[index]
        return SyntheticFrame(index, pose, scan(self.scene, pose, rng, self.lidar), render(self.scene, pose, rng))

    def camera_poses(self) -> np.ndarray:
        """(frames, 3, 4) KITTI `poses.txt`: camera-0 pose of each frame in the first frame's camera-0 frame."""
        tr = np.vstack([KITTI_TR, [0.0, 0.0, 0.0, 1.0]])
        cam_in_world = [p.matrix() @ np.linalg.inv(tr) for p in self.poses]
        first_inv = np.linalg.inv(cam_in_world[0])
        return np.stack([(first_inv @ m)[:3] for m in cam_in_world])


def calib_text() -> str:
    """KITTI odometry `calib.txt` content (P0..P3, Tr; 12 numbers per line)."""
    rows = [("P0", KITTI_P0), ("P1", KITTI_P1), ("P2", KITTI_P2), ("P3", KITTI_P3), ("Tr", KITTI_TR)]
    return "".join(f"{name}: " + " ".join(f"{v:.12e}" for v in m.reshape(-1)) + "\n" for name, m in rows)


def write_frame(folder: Path, frame: SyntheticFrame, name: str, dense_labels: bool = False) -> None:
    """Write one frame's .bin, .label and .png (and with `dense_labels` the camera's per-pixel classes and
    instances as a pseudo-label map, where SAM-PLG writes its own) into a sequence `folder`."""
    points = np.hstack([frame.scan.xyz, frame.scan.intensity[:, None]]).astype(np.float32)
    points.tofile(folder / "velodyne" / f"{name}.bin")
    frame.scan.label.astype(np.uint32).tofile(folder / "labels" / f"{name}.label")
    Image.fromarray(frame.camera.image).save(folder / "image_2" / f"{name}.png", compress_level=3)
    if dense_labels:
        camera = frame.camera
        save_pseudo_labels(pseudo_label_path(folder, name),
                           np.stack([camera.class_map, camera.instance_map]).astype(np.uint16))


def generate_sequence(out: str | os.PathLike, frames: int, seed: int = 0, progress: bool = True, *,
                      every: int = 1, dense_labels: bool = False) -> Path:
    """Render `frames` frames of a synthetic drive into the sequence folder `out` (atomically).

    every: keep every `every`-th frame of the 10 Hz drive (a longer, more varied drive for the same
    number of frames; poses and times are those of the kept frames). dense_labels: also write the
    camera's per-pixel classes as pseudo-label maps (`image_2_labels/`, the SAM-PLG format).
    Refuses an existing `out` that is not an empty folder (FileExistsError naming it). Everything is
    written into a temporary sibling folder that is renamed to `out` when complete, and removed on error.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"refusing to overwrite {out}: it exists and is not an empty folder")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    sequence = SyntheticSequence(frames=(frames - 1) * every + 1, seed=seed)
    kept = range(0, len(sequence), every)
    with atomic_dir(out) as tmp:
        for sub in ("velodyne", "labels", "image_2"):
            (tmp / sub).mkdir()
        (tmp / "calib.txt").write_text(calib_text())
        poses = sequence.camera_poses()[list(kept)].reshape(frames, 12)
        (tmp / "poses.txt").write_text("".join(" ".join(f"{v:.9e}" for v in row) + "\n" for row in poses))
        (tmp / "times.txt").write_text("".join(f"{i * FRAME_PERIOD:.6e}\n" for i in kept))
        for number, index in enumerate(tqdm(kept, desc=f"synth {out.name}", unit="frame", disable=not progress)):
            write_frame(tmp, sequence.frame(index), f"{number:06d}", dense_labels)
    return out
