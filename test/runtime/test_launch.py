"""launch/segment.launch.py: its argument logic everywhere; the launch description where launch_ros imports."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from elite_ros.params import default_params_file, load_params_file

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "segment.launch.py"
REQUIRED_ARGUMENTS = {"input_topic", "output_prefix", "params_file", "checkpoint", "device", "use_sim_time",
                      "dds_profile", "respawn", "respawn_delay"}


@pytest.fixture(scope="module")
def launch_module():
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no launch import at module level
    return module


def defaults(module) -> dict[str, str]:
    return {name: default for name, (default, _) in module.ARGUMENTS.items()}


def test_arguments_and_defaults(launch_module):
    assert REQUIRED_ARGUMENTS <= set(launch_module.ARGUMENTS)
    values = defaults(launch_module)
    assert Path(values["params_file"]) == default_params_file()
    load_params_file(values["params_file"])  # the default params file is valid
    args = launch_module.node_arguments(values)
    assert args["executable"] == "segment_node" and args["package"] == "elite_ros"
    assert args["parameters"] == [values["params_file"], {"use_sim_time": False}]  # params file decides the rest
    assert args["remappings"] == [("~/input/pointcloud", "/pointcloud")]


def test_arguments_override_topics_device_checkpoint_and_sim_time(launch_module):
    values = defaults(launch_module) | {"input_topic": "/velodyne_points", "output_prefix": "/perception/seg/",
                                        "device": "cuda:1", "checkpoint": "/models/s.safetensors",
                                        "use_sim_time": "true"}
    args = launch_module.node_arguments(values)
    assert args["parameters"][1] == {"use_sim_time": True, "device": "cuda:1", "checkpoint": "/models/s.safetensors"}
    assert dict(args["remappings"]) == {
        "~/input/pointcloud": "/velodyne_points",
        "~/output/pointcloud/segmentation": "/perception/seg/segmentation",
        "~/output/pointcloud/visualization": "/perception/seg/visualization",
        "~/output/pointcloud/filtered": "/perception/seg/filtered",
    }


def test_dds_profile_for_the_node_and_off_switch(launch_module):
    import xml.etree.ElementTree as ElementTree

    from elite_ros.dds import default_profile, profile_environment, profile_variable

    values = defaults(launch_module)
    assert Path(values["dds_profile"]) == default_profile()
    env = launch_module.node_arguments(values)["additional_env"]
    assert env == {profile_variable(): str(default_profile())}
    assert profile_environment("p.xml", "humble") == {"FASTRTPS_DEFAULT_PROFILES_FILE": "p.xml"}  # Fast DDS 2.x
    assert profile_environment("p.xml", "kilted") == {"FASTDDS_DEFAULT_PROFILES_FILE": "p.xml"}  # 3.x, PyPI
    assert profile_environment("p.xml", "") == {"FASTDDS_DEFAULT_PROFILES_FILE": "p.xml"}
    assert launch_module.node_arguments(values | {"dds_profile": ""})["additional_env"] == {}
    root = ElementTree.parse(default_profile()).getroot()  # well-formed, and a larger SHM segment is the point
    segment = root.find(".//{http://www.eprosima.com}segment_size")
    assert segment is not None and int(segment.text) >= 16 * 2**20


def test_respawn_or_shutdown_with_the_node(launch_module):
    values = defaults(launch_module)
    args = launch_module.node_arguments(values)
    assert args["respawn"] is False and "on_exit" not in args  # on_exit=Shutdown is added by the launch action
    args = launch_module.node_arguments(values | {"respawn": "true", "respawn_delay": "5"})
    assert args["respawn"] is True and args["respawn_delay"] == 5.0


def test_launch_description_builds_the_node(launch_module):
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; it comes with a ROS 2 distro install")
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
    from launch_ros.actions import Node

    description = launch_module.generate_launch_description()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert REQUIRED_ARGUMENTS <= declared
    context = LaunchContext()
    context.launch_configurations.update(defaults(launch_module) | {"input_topic": "/velodyne_points"})
    opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))
    (node,) = opaque.execute(context)
    assert isinstance(node, Node)
    assert any(isinstance(e, Shutdown) for e in node.get_sub_entities())  # on_exit: the launch ends with the node
    context.launch_configurations["respawn"] = "true"
    (node,) = opaque.execute(context)
    assert not any(isinstance(e, Shutdown) for e in node.get_sub_entities())


def test_outputs_come_from_the_handler_without_a_ros_import(launch_module):
    import subprocess
    import sys

    from elite_ros.handler import OUTPUTS

    assert launch_module.OUTPUTS is OUTPUTS
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('l', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "bad = [n for n in ('rclpy', 'launch', 'launch_ros', 'torch') if n in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(LAUNCH_FILE)], check=True, timeout=120)
