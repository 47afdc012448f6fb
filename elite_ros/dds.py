"""The DDS profile elite_ros ships for large clouds (config/fastdds.xml) and how a process loads it.

Fast DDS reads a default XML profile file named by an environment variable when a process creates its
first DDS participant (rclpy.init + the first node). The variable's name changed with Fast DDS 3.0
(ROS 2 Kilted), and rmw_fastrtps warns about the old name there, so the distro (``ROS_DISTRO``, set by a
ROS install's setup script; unset for the PyPI packages, which are Kilted's) picks the name. The
writer's shared-memory segment decides whether a large best-effort sample arrives (config/fastdds.xml
says why), so every process on this computer that publishes large clouds needs the profile: the launch
file gives it to the node; drivers and players need it in their own environment. No ROS import here.
"""
from __future__ import annotations

import os
from pathlib import Path

from elite_ros.params import find_share_file

PROFILE_FILE = ("config", "fastdds.xml")
#: Fast DDS >= 3.0 (ROS 2 Kilted and later), Fast DDS 2.x (Humble, Jazzy)
PROFILE_ENVIRONMENT = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
#: ROS 2 distros whose Fast DDS is 2.x and reads only the old variable name
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")


def default_profile() -> Path:
    """The shipped config/fastdds.xml (source tree, pip prefix or ament share)."""
    return find_share_file(*PROFILE_FILE)


def profile_variable(distro: str | None = None) -> str:
    """The variable Fast DDS reads for `distro` (default: ``$ROS_DISTRO``)."""
    distro = os.environ.get("ROS_DISTRO", "") if distro is None else distro
    return PROFILE_ENVIRONMENT[1] if distro.strip().lower() in FAST_DDS_2_DISTROS else PROFILE_ENVIRONMENT[0]


def profile_environment(path: str | os.PathLike[str] | None, distro: str | None = None) -> dict[str, str]:
    """The environment variable that makes Fast DDS load `path` as its default profile ({} for None / "")."""
    if not path or not str(path).strip():
        return {}
    return {profile_variable(distro): str(path)}
