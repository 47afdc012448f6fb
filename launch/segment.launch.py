"""Launch the elite_ros segment node: one LiDAR topic in, labelled clouds out.

    ros2 launch elite_ros segment.launch.py input_topic:=/velodyne_points
    ros2 launch elite_ros segment.launch.py input_topic:=/sensing/lidar/top/pointcloud \
        output_prefix:=/perception/segmentation device:=cuda:0 use_sim_time:=true

Outputs: <output_prefix>/segmentation, <output_prefix>/visualization, <output_prefix>/filtered
(default: the node's own ~/output/pointcloud/...). `checkpoint` and `device`, when given, override the
params file's values; otherwise the params file (default: the shipped config/segment.param.yaml) decides.

The node gets the shipped Fast DDS profile for large clouds (config/fastdds.xml, `dds_profile`; empty =
Fast DDS's defaults): its outputs of several MB then reach local subscribers. When the node exits (a
parameter it refuses, a crash), the whole launch shuts down, so a supervisor sees it; `respawn:=true`
restarts the node after `respawn_delay` seconds instead.

The launch imports are inside the functions so the argument logic (`node_arguments`) is testable without
a ROS distro (launch / launch_ros are not on PyPI).
"""
from __future__ import annotations

from elite_ros.dds import default_profile, profile_environment
from elite_ros.handler import OUTPUTS  # no ROS import: usable without a ROS distro
from elite_ros.params import default_params_file

NODE_NAME = "segment_node"
ARGUMENTS = {
    "input_topic": ("/pointcloud", "PointCloud2 topic to segment (remapped onto ~/input/pointcloud)"),
    "output_prefix": ("", "namespace for the three outputs (<prefix>/segmentation, /visualization, /filtered); "
                          "empty: ~/output/pointcloud"),
    "params_file": (str(default_params_file()), "ROS 2 params file (format: /**: ros__parameters:)"),
    "checkpoint": ("", "student checkpoint (.safetensors); empty: the params file's value"),
    "device": ("", "auto | cpu | cuda | cuda:N; empty: the params file's value"),
    "use_sim_time": ("false", "use /clock (set true when replaying a bag with `ros2 bag play --clock`)"),
    "node_name": (NODE_NAME, "name of the node"),
    "dds_profile": (str(default_profile()), "Fast DDS XML profile for the node (large clouds: a larger shared-memory "
                                            "segment); empty: Fast DDS's defaults"),
    "respawn": ("false", "restart the node when it exits; false: the launch shuts down with the node"),
    "respawn_delay": ("2.0", "seconds before a respawn"),
}


def _true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def node_arguments(values: dict[str, str]) -> dict:
    """launch_ros Node keyword arguments from the launch arguments' values (strings)."""
    overrides: dict = {"use_sim_time": _true(values["use_sim_time"])}
    for name in ("checkpoint", "device"):
        if values[name].strip():
            overrides[name] = values[name].strip()
    remappings = [("~/input/pointcloud", values["input_topic"])]
    prefix = values["output_prefix"].strip().rstrip("/")
    if prefix:
        remappings += [(f"~/output/pointcloud/{out}", f"{prefix}/{out}") for out in OUTPUTS]
    return {
        "package": "elite_ros", "executable": "segment_node", "name": values["node_name"], "output": "screen",
        "emulate_tty": True, "parameters": [values["params_file"], overrides], "remappings": remappings,
        "additional_env": profile_environment(values["dds_profile"]),
        "respawn": _true(values["respawn"]), "respawn_delay": float(values["respawn_delay"]),
    }


def _node(context, *args, **kwargs):
    from launch.actions import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    arguments = node_arguments(values)
    if not arguments["respawn"]:  # the node's end is the launch's end
        arguments["on_exit"] = [Shutdown(reason=f"{values['node_name']} exited")]
    return [Node(**arguments)]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_node)]
    )
