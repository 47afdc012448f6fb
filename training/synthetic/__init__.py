"""A procedural, licence-free KITTI-like world: HDL-64E ray caster, camera renderer, labels.

`SyntheticSequence(frames, seed).frame(i)` gives a scan and an image of the same instant with exact
labels (and a per-pixel class map); `generate_sequence(out, frames, seed)` writes a SemanticKITTI folder.
"""
from .camera import IMAGE_HEIGHT, IMAGE_WIDTH, KITTI_P2, KITTI_TR, CameraFrame, render
from .lidar import LidarConfig, LidarScan, scan
from .pose import EgoPose, ego_trajectory
from .scene import Scene, SceneConfig, generate_scene
from .sequence import SyntheticFrame, SyntheticSequence, calib_text, generate_sequence

__all__ = [
    "IMAGE_HEIGHT", "IMAGE_WIDTH", "KITTI_P2", "KITTI_TR", "CameraFrame", "render", "LidarConfig", "LidarScan",
    "scan", "EgoPose", "ego_trajectory", "Scene", "SceneConfig", "generate_scene", "SyntheticFrame",
    "SyntheticSequence", "calib_text", "generate_sequence",
]
