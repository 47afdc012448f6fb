"""The node with a fusion checkpoint and a camera: a scan without image, then a late image; both published."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) not installed")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from ros_spin import spin_until  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from elite_ros.bag import TYPESTORE  # noqa: E402
from elite_ros.camera import LIDAR_TO_OPTICAL_ROTATION, forward_camera  # noqa: E402
from elite_ros.camera_feed import CameraFeed  # noqa: E402
from elite_ros.cloud import POINTCLOUD2_TYPE  # noqa: E402
from elite_ros.node import SegmentNode  # noqa: E402
from elite_ros.recording import kitti_cloud  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]
IMAGE_TOPIC = "/test_camera/image_raw"
CAMERA = forward_camera(width=320, height=96, focal=180.0)  # LiDAR at the camera's centre, looking along +x


@pytest.fixture(scope="module")
def fusion_checkpoint(tmp_path_factory):
    import torch

    from elite_ros.checkpoint import make_metadata, save_checkpoint
    from elite_ros.fusion import FusionConfig, FusionStudent, ImageFusionConfig
    from elite_ros.student import StudentConfig

    torch.manual_seed(0)
    model = FusionStudent(FusionConfig(lidar=StudentConfig(hidden_channels=8, decoder_channels=8),
                                       image=ImageFusionConfig(widths=(4, 8, 8), channels=8)))
    return save_checkpoint(tmp_path_factory.mktemp("fusion") / "fusion.safetensors", model, make_metadata(model))


def cloud(stamp_ns: int, seed: int) -> PointCloud2:
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.uniform(-30, 30, 3000), rng.uniform(-30, 30, 3000), rng.uniform(-2, 1, 3000)])
    fields = {name: xyz[:, i].astype(np.float32) for i, name in enumerate("xyz")}
    fields["intensity"] = rng.uniform(0, 1, 3000).astype(np.float32)
    message = kitti_cloud(fields, stamp_ns, frame_id="velodyne")
    return deserialize_message(bytes(TYPESTORE.serialize_cdr(message, POINTCLOUD2_TYPE)), PointCloud2)


def header_at(msg, stamp_ns: int, frame: str) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame


def image(stamp_ns: int) -> Image:
    msg = Image(height=CAMERA.height, width=CAMERA.width, encoding="rgb8", step=CAMERA.width * 3)
    msg.data = np.random.default_rng(1).integers(0, 256, CAMERA.height * CAMERA.width * 3, dtype=np.uint8).tobytes()
    header_at(msg, stamp_ns, "camera_optical")
    return msg


def camera_info(stamp_ns: int) -> CameraInfo:
    info = CameraInfo(height=CAMERA.height, width=CAMERA.width)
    info.p = [float(v) for v in np.hstack([CAMERA.projection[:, :3] @ LIDAR_TO_OPTICAL_ROTATION.T,
                                           np.zeros((3, 1))]).ravel()]  # intrinsics: K
    header_at(info, stamp_ns, "camera_optical")
    return info


def test_a_scan_without_image_then_a_late_image_both_published(fusion_checkpoint):
    context = Context()
    rclpy.init(context=context)
    extrinsic = np.hstack([LIDAR_TO_OPTICAL_ROTATION, np.zeros((3, 1))]).ravel().tolist()
    values = {"checkpoint": str(fusion_checkpoint), "device": "cpu", "stale_input_s": 3600.0,
              "latency_budget_ms": 60000.0, "camera.image_topic": IMAGE_TOPIC, "camera.extrinsic": extrinsic,
              "camera.sync_tolerance_ms": 30.0}
    node = SegmentNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    peer = rclpy.create_node("camera_tester", context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        executor.add_node(node)
        executor.add_node(peer)
        clouds = peer.create_publisher(PointCloud2, "/segment_node/input/pointcloud", 10)
        images = peer.create_publisher(Image, IMAGE_TOPIC, 10)
        infos = peer.create_publisher(CameraInfo, "/test_camera/camera_info", 10)
        received: list[PointCloud2] = []
        peer.create_subscription(PointCloud2, node.output_topics["segmentation"], received.append,
                                 qos_profile_sensor_data)
        publishers = (clouds, images, infos)
        assert spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in publishers)
                          and node._outputs["segmentation"].get_subscription_count() > 0), "no DDS discovery"
        feed = node.camera_feed
        assert isinstance(feed, CameraFeed)
        t1 = 1_700_000_000_000_000_000
        infos.publish(camera_info(t1))
        assert spin_until(executor, lambda: feed.camera is not None)

        clouds.publish(cloud(t1, seed=0))  # its image is not there yet: the imputation path, published at once
        assert spin_until(executor, lambda: len(received) == 1), "the scan without image was not published"
        assert feed.counters.without_image == 1 and feed.counters.with_image == 0
        assert "no image received yet" in feed.last_reason

        images.publish(image(t1))  # late: its scan already ran
        assert spin_until(executor, lambda: feed.counters.images == 1)
        assert feed.counters.late_images == 1
        clouds.publish(cloud(t1 + 10_000_000, seed=1))  # 10 ms later: pairs with that image
        assert spin_until(executor, lambda: len(received) == 2), "the scan with the late image was not published"
        assert feed.counters.with_image == 1 and feed.counters.without_image == 1
        assert [m.header.stamp.nanosec for m in received] == [0, 10_000_000]
        values_ = {kv.key: kv.value for kv in node.diagnostic_status().values}
        assert values_["scans_with_image"] == "1" and values_["scans_without_image"] == "1"
        assert values_["late_images"] == "1" and values_["processed"] == "2"
    finally:
        executor.shutdown()
        peer.destroy_node()
        node.destroy_node()
        context.try_shutdown()


def test_camera_feed_pairs_within_the_tolerance_and_says_why_not():
    feed = CameraFeed(tolerance_ns=30_000_000)
    rgb = np.zeros((CAMERA.height, CAMERA.width, 3), np.uint8)
    assert feed.match(0) == (None, None) and feed.last_reason == "no image received yet"
    feed.add_image(0, rgb)
    assert feed.match(0) == (None, None) and feed.last_reason == "no CameraInfo yet"
    feed.set_camera_info(camera_info(0))
    assert feed.match(0) == (None, None) and "no LiDAR -> camera transform" in feed.last_reason
    feed.set_extrinsic(np.vstack([np.hstack([LIDAR_TO_OPTICAL_ROTATION, np.zeros((3, 1))]), [0, 0, 0, 1]]))
    got, camera = feed.match(20_000_000)
    assert got is rgb and np.allclose(camera.projection, CAMERA.projection)
    assert feed.match(40_000_000) == (None, None) and "-40 ms" in feed.last_reason  # stale
    feed.add_image(100_000_000, rgb[:10])
    assert feed.match(100_000_000) == (None, None) and "CameraInfo says 320x96" in feed.last_reason
    assert feed.counters.with_image == 1 and feed.counters.without_image == 5
