"""The node in its own process, over real DDS with the shipped Fast DDS profile: 2 MB clouds in, every
output out (large best-effort samples cross processes through the writer's shared-memory segment)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) not installed")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from elite_ros.cloud import make_cloud, read_points  # noqa: E402
from elite_ros.dds import profile_variable  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]
INPUT = "/large/points"
OUTPUTS = ("segmentation", "visualization", "filtered")
CLOUDS = 5
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from elite_ros.checkpoint import make_metadata, save_checkpoint
    from elite_ros.student import Student, StudentConfig

    torch.manual_seed(0)
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, make_metadata(model))


@pytest.fixture()
def node_process(tiny_checkpoint):
    assert os.environ.get(profile_variable()), "conftest gives every DDS participant the shipped profile"
    command = [sys.executable, "-m", "elite_ros.node", "--ros-args", "-r", f"~/input/pointcloud:={INPUT}",
               "-p", f"checkpoint:={tiny_checkpoint}", "-p", "device:=cpu", "-p", "stale_input_s:=3600.0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield process
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def kitti_cloud_2mb(data_dir: Path, index: int) -> PointCloud2:
    points = np.fromfile(data_dir / "kitti_odometry" / "seq00" / "000000.bin", dtype=np.float32).reshape(-1, 4)
    fields = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2], "intensity": points[:, 3]}
    msg = make_cloud(fields, PointCloud2().header, like=PointCloud2())
    msg.header.frame_id, msg.header.stamp.sec = "velodyne", 1000 + index
    return msg


def test_2mb_best_effort_clouds_in_every_output_out(node_process, data_dir):
    context = Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("large_cloud_peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    received: dict[str, list[PointCloud2]] = {o: [] for o in OUTPUTS}
    reports: list[DiagnosticArray] = []
    try:
        publisher = peer.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)  # best effort, as drivers
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)  # as RViz subscribes
        subscriptions = [peer.create_subscription(PointCloud2, f"/segment_node/output/pointcloud/{o}",
                                                  lambda m, o=o: received[o].append(m), reliable) for o in OUTPUTS]
        peer.create_subscription(DiagnosticArray, "/diagnostics", reports.append, 10)

        def spin_until(condition) -> bool:
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline and node_process.poll() is None:
                if condition():
                    return True
                executor.spin_once(timeout_sec=0.05)
            return condition()

        assert spin_until(lambda: reports and publisher.get_subscription_count() > 0
                          and all(s.get_publisher_count() > 0 for s in subscriptions)), "node not up"
        clouds = [kitti_cloud_2mb(data_dir, i) for i in range(CLOUDS)]
        assert len(clouds[0].data) > 1_900_000  # 124,668 points x 16 bytes
        for i, cloud in enumerate(clouds):
            publisher.publish(cloud)
            assert spin_until(lambda i=i: all(len(r) > i for r in received.values())), f"outputs of cloud {i}"
        for name, messages in received.items():
            assert [m.header.stamp.sec for m in messages] == [1000 + i for i in range(CLOUDS)], name
        segmentation = received["segmentation"][-1]
        assert segmentation.width == clouds[0].width and len(segmentation.data) > len(clouds[0].data)
        assert read_points(segmentation)["class_id"].max() < 20
        assert received["visualization"][-1].width == clouds[0].width
    finally:
        executor.shutdown()
        peer.destroy_node()
        context.try_shutdown()
