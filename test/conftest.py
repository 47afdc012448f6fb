"""Shared pytest set-up: fixture paths and a ROS 2 environment that never leaves the loopback."""
from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

# Before anything can import rclpy: DDS discovery stays on this machine, in a domain of our own.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
# Demo data (and anything else elite_ros caches) are cached per test run, never in the user's ~/.cache.
os.environ["ELITE_ROS_CACHE"] = tempfile.mkdtemp(prefix="elite_ros_test_cache_")
atexit.register(shutil.rmtree, os.environ["ELITE_ROS_CACHE"], ignore_errors=True)
# ROS logs of every node the tests start (in this process or a child) go to a folder of this run.
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="elite_ros_test_ros_log_"))
atexit.register(shutil.rmtree, os.environ["ROS_LOG_DIR"], ignore_errors=True)
# DDS participants load the shipped Fast DDS profile (config/fastdds.xml), as segment.launch.py gives it to
# the node: this process and the nodes it starts publish 2 MB clouds, which the defaults drop.
from elite_ros.dds import default_profile, profile_variable  # noqa: E402 - after the cache is set

os.environ.setdefault(profile_variable(), str(default_profile()))

REPO = Path(__file__).resolve().parents[1]
#: ../shared/data next to the repository (CI clones with shared/ beside it); ELITE_ROS_DATA overrides.
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real third-party fixtures (read-only, CC BY-NC-SA for the KITTI parts)."""
    if not DATA.is_dir():
        pytest.fail(f"test fixtures not found at {DATA}: clone the repo next to shared/ or set ELITE_ROS_DATA")
    return DATA


@pytest.fixture(scope="session")
def luminar_bags(data_dir: Path) -> dict[str, Path]:
    """The real Luminar recording in its three containers: ROS 1, rosbag2 sqlite3, rosbag2 mcap."""
    bags = data_dir / "bags"
    return {
        "ros1": bags / "embag_luminar_test.bag",
        "sqlite3": bags / "derived" / "embag_luminar_test_ros2_db3",
        "mcap": bags / "derived" / "embag_luminar_test_ros2_mcap",
    }


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one intra-op torch thread avoids thread contention on a shared CPU (restored after)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread_per_process(monkeypatch, one_torch_thread):
    """DDP comparisons: this process and every process it spawns (ddp_spawn children read OMP_NUM_THREADS
    when they import torch) run one intra-op thread, whatever the shell set, so both sides sum alike."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
