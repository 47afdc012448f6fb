"""Launch the elite_ros segment node: one LiDAR topic in, labelled clouds out.

    ros2 launch elite_ros segment.launch.py input_topic:=/velodyne_points
    ros2 launch elite_ros segment.launch.py input_topic:=/sensing/lidar/top/pointcloud \
        output_prefix:=/perception/segmentation device:=cuda:0 use_sim_time:=true

Outputs: <output_prefix>/segmentation, <output_prefix>/visualization, <output_prefix>/filtered
(default: the node's own ~/output/pointcloud/...). `checkpoint` and `device`, when given, override the
params file's values; otherwise the params file (default: the shipped config/segment.param.yaml) decides.
The launch imports are inside the functions so the argument logic (`node_arguments`) is testable without
a ROS distro (launch / launch_ros are not on PyPI).
"""
from __future__ import annotations

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
    }


def _node(context, *args, **kwargs):
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    return [Node(**node_arguments(values))]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_node)]
    )
