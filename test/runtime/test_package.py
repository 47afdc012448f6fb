"""package.xml declares what the runtime and the launch file import, so rosdep installs it in a workspace."""
from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: imported module -> its rosdep key (ROS packages are their own key)
ROSDEP_KEYS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "sensor_msgs": "sensor_msgs", "std_msgs": "std_msgs",
    "diagnostic_msgs": "diagnostic_msgs", "ament_index_python": "ament_index_python", "launch": "launch",
    "launch_ros": "launch_ros", "tf2_ros": "tf2_ros", "numpy": "python3-numpy", "yaml": "python3-yaml",
    "jsonschema": "python3-jsonschema",
    "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib", "PIL": "python3-pil", "psutil": "python3-psutil",
}
#: no rosdep key: pip installs them (README "In the car"); setup.py must require the ones that are not optional
PIP_ONLY = {"torch": "torch", "spconv": "spconv", "safetensors": "safetensors", "rosbags": "rosbags",
            "torchsparse": None}  # torchsparse: optional, built by the user


def imported_modules(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"elite_ros", "elite_ros_training", "__future__"}  # ours


def declared(kind: str) -> set[str]:
    root = ElementTree.parse(REPO / "package.xml").getroot()
    return {element.text.strip() for element in root.iter(kind) if element.text}


def test_every_runtime_import_is_declared_or_pip_only():
    modules = imported_modules(sorted((REPO / "elite_ros").rglob("*.py")) + sorted((REPO / "launch").glob("*.py")))
    unknown = modules - set(ROSDEP_KEYS) - set(PIP_ONLY)
    assert not unknown, f"imports with no rosdep key or pip decision: {sorted(unknown)}"
    missing = {ROSDEP_KEYS[m] for m in modules & set(ROSDEP_KEYS)} - declared("exec_depend")
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"


def test_pip_only_dependencies_are_in_setup_py():
    setup = (REPO / "setup.py").read_text()
    assert all(f'"{name}' in setup for name in PIP_ONLY.values() if name), "setup.py RUNTIME must require them"


def test_test_dependencies_exist_as_tests():
    """No ament lint test dependencies without lint tests: lint is ruff + mypy, configured in pyproject.toml."""
    assert not {d for d in declared("test_depend") if d.startswith("ament_")}
    assert "python3-pytest" in declared("test_depend")
