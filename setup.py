"""elite_ros: an ament_python package that also installs with plain pip.

Inside a colcon workspace the ROS distro provides rclpy, the message packages, launch and launch_ros;
with pip, the `ros` extra brings ROS 2 Kilted's rclpy, message packages and FastRTPS from PyPI.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "elite_ros"

RUNTIME = [
    "numpy>=1.24",
    "torch>=2.1",
    "spconv>=2.3.6",
    "safetensors>=0.4",
    "rosbags>=0.11",
    "pyyaml>=6",
    "jsonschema>=4",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "pillow>=9",
    "psutil>=5.9",
]
TRAIN = [
    "torchvision",  # segment_anything imports it; pin it to the torch build (see README)
    "segment-anything>=1.0",
    "peft>=0.17",
    "lightning>=2.2",
    "tensorboard>=2.14",  # fit logs to TensorBoard (and csv)
]
ROS = [
    "ros-rclpy",
    "ros-sensor-msgs",
    "ros-std-msgs",
    "ros-diagnostic-msgs",
    "ros-rmw-fastrtps-cpp",  # without an RMW implementation `import rclpy` fails
]
LINT = ["ruff>=0.6", "mypy>=1.10"]  # configured in pyproject.toml
TEST = ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6.80"] + LINT + TRAIN + ROS

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Real-time LiDAR semantic segmentation for ROS 2 (ELiTe student, SAM-distilled)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"])
    + ["elite_ros_training", "elite_ros_training.commands", "elite_ros_training.data", "elite_ros_training.ppmskd",
       "elite_ros_training.synthetic", "elite_ros_training.teacher"],
    package_dir={"elite_ros_training": "training"},
    package_data={"elite_ros": ["assets/*", "py.typed"], "elite_ros_training": ["configs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/schema", glob("schema/*.json")),
    ],
    install_requires=RUNTIME,
    extras_require={"train": TRAIN, "ros": ROS, "test": TEST},
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "elite-ros = elite_ros.cli:main",
            "segment_node = elite_ros.node:main",
            "elite-ros-train = elite_ros_training.cli:main",
        ],
    },
)
