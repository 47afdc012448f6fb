"""The DDS profile elite_ros ships for large clouds (config/fastdds.xml) and how a process loads it.

Fast DDS reads a default XML profile file named by an environment variable when a process creates its
first DDS participant (rclpy.init + the first node). The variable's name changed with Fast DDS 3.0, so
both are set. The writer's shared-memory segment decides whether a large best-effort sample arrives
(config/fastdds.xml says why), so every process on this computer that publishes large clouds needs the
profile: the launch file gives it to the node; drivers and players need it in their own environment.
No ROS import here.
"""
from __future__ import annotations

import os
from pathlib import Path

from elite_ros.params import find_share_file

PROFILE_FILE = ("config", "fastdds.xml")
#: Fast DDS >= 3.0 (ROS 2 Kilted and later), Fast DDS 2.x (Humble, Jazzy)
PROFILE_ENVIRONMENT = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def default_profile() -> Path:
    """The shipped config/fastdds.xml (source tree, pip prefix or ament share)."""
    return find_share_file(*PROFILE_FILE)


def profile_environment(path: str | os.PathLike[str] | None) -> dict[str, str]:
    """Environment variables that make Fast DDS load `path` as its default profile ({} for None / "")."""
    if not path or not str(path).strip():
        return {}
    return {name: str(path) for name in PROFILE_ENVIRONMENT}
