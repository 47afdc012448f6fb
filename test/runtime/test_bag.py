"""elite_ros.bag on the real Luminar recording (ROS 1, rosbag2 sqlite3, rosbag2 mcap) and on small bags
written here with rosbags' own ROS 1 / ROS 2 writers."""
from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from elite_ros.bag import (
    TYPESTORE,
    BagError,
    BagMessage,
    BagWriter,
    bag_info,
    detect_format,
    iter_messages,
    to_ros2,
)
from elite_ros.cloud import POINTCLOUD2_TYPE

CLOUD_TOPIC = "/luminar_pointcloud"
CLOUD_TYPE = POINTCLOUD2_TYPE
CONTAINERS = ("ros1", "sqlite3", "mcap")
# The Luminar layout, data/README.md: (name, offset, datatype, count); 7 = FLOAT32, 6 = UINT32, 4 = UINT16
LUMINAR_FIELDS = [
    ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 16, 7, 1),
    ("time_sec", 20, 6, 1), ("time_nsec", 24, 6, 1), ("laser_id", 28, 4, 1),
]
LUMINAR_POINT_STEP = 32
LUMINAR_CLOUDS = 5
Kilted = TYPESTORE.types


@pytest.fixture(scope="module")
def clouds(luminar_bags: dict[str, Path]) -> dict[str, list[BagMessage]]:
    """The 5 Luminar clouds as read from each container."""
    return {name: list(iter_messages(path, topics=[CLOUD_TOPIC])) for name, path in luminar_bags.items()}


def _tree_digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


# ------------------------------------------------------------------------------------------ detection


def test_detect_format_of_every_container(luminar_bags: dict[str, Path]) -> None:
    for name in CONTAINERS:
        assert detect_format(luminar_bags[name]) == name
    # bare storage files of the rosbag2 folders
    assert detect_format(next(luminar_bags["mcap"].glob("*.mcap"))) == "mcap"
    assert detect_format(next(luminar_bags["sqlite3"].glob("*.db3"))) == "sqlite3"


def test_bare_storage_files_read_like_their_folders(luminar_bags: dict[str, Path], clouds) -> None:
    for name, suffix in (("mcap", "*.mcap"), ("sqlite3", "*.db3")):
        bare = next(luminar_bags[name].glob(suffix))
        assert bag_info(bare) == {CLOUD_TOPIC: (CLOUD_TYPE, LUMINAR_CLOUDS)}
        messages = list(iter_messages(bare))
        assert [m.timestamp for m in messages] == [m.timestamp for m in clouds[name]]
        assert all(bytes(a.msg.data) == bytes(b.msg.data) for a, b in zip(messages, clouds[name]))


# ------------------------------------------------------------------------------------------ reading


def test_bag_info_lists_every_topic(luminar_bags: dict[str, Path]) -> None:
    assert bag_info(luminar_bags["ros1"]) == {
        "/base_pose_ground_truth": ("nav_msgs/msg/Odometry", 5),
        "/base_scan": ("sensor_msgs/msg/LaserScan", 5),
        CLOUD_TOPIC: (CLOUD_TYPE, LUMINAR_CLOUDS),
    }
    for name in ("sqlite3", "mcap"):  # converted with --include-topic /luminar_pointcloud
        assert bag_info(luminar_bags[name]) == {CLOUD_TOPIC: (CLOUD_TYPE, LUMINAR_CLOUDS)}


def test_luminar_clouds_are_identical_in_all_containers(clouds) -> None:
    reference = clouds["ros1"]
    assert len(reference) == LUMINAR_CLOUDS
    stamps = [m.timestamp for m in reference]
    assert stamps == sorted(stamps) and len(set(stamps)) == LUMINAR_CLOUDS
    for name in CONTAINERS:
        messages = clouds[name]
        assert [m.timestamp for m in messages] == stamps, name
        for message, ref in zip(messages, reference):
            cloud = message.msg
            assert message.topic == CLOUD_TOPIC and message.msgtype == CLOUD_TYPE
            assert type(cloud) is Kilted[CLOUD_TYPE], name  # ROS 2 Kilted class, whatever the container
            assert type(cloud.header) is Kilted["std_msgs/msg/Header"]
            assert not hasattr(cloud.header, "seq")
            assert cloud.header.frame_id == "luminar_lidar"
            assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec) == (
                ref.msg.header.stamp.sec, ref.msg.header.stamp.nanosec)
            assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == LUMINAR_FIELDS
            assert cloud.point_step == LUMINAR_POINT_STEP and cloud.height == 1
            assert cloud.row_step == cloud.width * LUMINAR_POINT_STEP and not cloud.is_bigendian
            assert cloud.is_dense
            assert 30_000 < cloud.width < 40_000  # ~36,000 points per Luminar cloud
            assert cloud.data.dtype == np.uint8 and cloud.data.size == cloud.row_step
            assert bytes(cloud.data) == bytes(ref.msg.data), name


def test_luminar_clouds_decode_identically(clouds) -> None:
    if importlib.util.find_spec("elite_ros.cloud") is None:
        pytest.skip("elite_ros.cloud not written yet; the data bytes are compared above")
    from elite_ros.cloud import decode

    for index in range(LUMINAR_CLOUDS):
        reference = decode(clouds["ros1"][index].msg)
        assert reference.xyz.shape[0] > 30_000 and reference.intensity is not None
        for name in ("sqlite3", "mcap"):
            scan = decode(clouds[name][index].msg)
            np.testing.assert_array_equal(scan.xyz, reference.xyz)
            np.testing.assert_array_equal(scan.intensity, reference.intensity)
            np.testing.assert_array_equal(scan.index, reference.index)


def test_ros1_messages_become_kilted_messages(luminar_bags: dict[str, Path]) -> None:
    messages = list(iter_messages(luminar_bags["ros1"], msgtypes=["sensor_msgs/msg/LaserScan",
                                                                  "nav_msgs/msg/Odometry"]))
    assert sorted({m.topic for m in messages}) == ["/base_pose_ground_truth", "/base_scan"]
    assert len(messages) == 10
    assert [m.timestamp for m in messages] == sorted(m.timestamp for m in messages)
    for message in messages:
        assert type(message.msg) is Kilted[message.msgtype]
        assert type(message.msg.header) is Kilted["std_msgs/msg/Header"]
        assert type(message.msg.header.stamp) is Kilted["builtin_interfaces/msg/Time"]
    scan = next(m.msg for m in messages if m.topic == "/base_scan")
    assert scan.header.frame_id == "base_laser_link"
    assert scan.ranges.dtype == np.float32 and scan.ranges.size > 0
    odometry = next(m.msg for m in messages if m.topic == "/base_pose_ground_truth")
    assert odometry.pose.covariance.shape == (36,) and odometry.pose.covariance.dtype == np.float64


def test_topic_filter_rejects_unknown_topic(luminar_bags: dict[str, Path]) -> None:
    with pytest.raises(BagError, match=r"/no_such_topic.*/luminar_pointcloud"):
        list(iter_messages(luminar_bags["mcap"], topics=["/no_such_topic"]))
    # a plain string is one topic, not a list of characters
    assert len(list(iter_messages(luminar_bags["ros1"], topics="/base_scan"))) == 5
    # a type filter that matches nothing yields nothing
    assert list(iter_messages(luminar_bags["mcap"], msgtypes="sensor_msgs/msg/Image")) == []


def test_time_window(luminar_bags: dict[str, Path], clouds) -> None:
    stamps = [m.timestamp for m in clouds["mcap"]]
    window = list(iter_messages(luminar_bags["mcap"], start=stamps[1], stop=stamps[3]))
    assert [m.timestamp for m in window] == stamps[1:3]


# --------------------------------------------------------- ROS 1 camera / TF types, other distros


def test_ros1_camera_and_tf_types_convert_to_ros2(tmp_path: Path) -> None:
    noetic = get_typestore(Stores.ROS1_NOETIC)  # has no tf2_msgs: add its ROS 1 definition
    tf_definition = "geometry_msgs/TransformStamped[] transforms\n"
    noetic.register(get_types_from_msg(tf_definition, "tf2_msgs/msg/TFMessage"))
    Header, Time = noetic.types["std_msgs/msg/Header"], noetic.types["builtin_interfaces/msg/Time"]
    header = Header(seq=41, stamp=Time(sec=12, nanosec=345), frame_id="camera")
    roi = noetic.types["sensor_msgs/msg/RegionOfInterest"](x_offset=1, y_offset=2, height=3, width=4,
                                                           do_rectify=True)
    camera_info = noetic.types["sensor_msgs/msg/CameraInfo"](
        header=header, height=370, width=1224, distortion_model="plumb_bob",
        D=np.array([0.1, -0.2, 0.0, 0.0, 0.01]), K=np.arange(9, dtype=np.float64),
        R=np.eye(3).ravel(), P=np.arange(12, dtype=np.float64) * 2, binning_x=0, binning_y=0, roi=roi)
    pixels = np.arange(6 * 4 * 3, dtype=np.uint8)
    image = noetic.types["sensor_msgs/msg/Image"](header=header, height=4, width=6, encoding="rgb8",
                                                  is_bigendian=0, step=18, data=pixels)
    Vector3 = noetic.types["geometry_msgs/msg/Vector3"]
    Quaternion = noetic.types["geometry_msgs/msg/Quaternion"]
    transform = noetic.types["geometry_msgs/msg/TransformStamped"](
        header=Header(seq=7, stamp=Time(sec=12, nanosec=0), frame_id="camera"), child_frame_id="velodyne",
        transform=noetic.types["geometry_msgs/msg/Transform"](
            translation=Vector3(x=0.27, y=-0.08, z=-0.06), rotation=Quaternion(x=0.5, y=-0.5, z=0.5, w=-0.5)))
    tf = noetic.types["tf2_msgs/msg/TFMessage"](transforms=[transform])

    path = tmp_path / "camera.bag"
    written = [("/camera/info", "sensor_msgs/msg/CameraInfo", camera_info),
               ("/camera/image", "sensor_msgs/msg/Image", image),
               ("/tf_static", "tf2_msgs/msg/TFMessage", tf)]
    with Ros1Writer(path) as writer:
        for index, (topic, msgtype, msg) in enumerate(written):
            connection = writer.add_connection(topic, msgtype, typestore=noetic)
            writer.write(connection, 1_000 + index, noetic.serialize_ros1(msg, msgtype))

    assert detect_format(path) == "ros1"
    got = {m.topic: m for m in iter_messages(path)}
    assert [got[t].timestamp for t, _, _ in written] == [1_000, 1_001, 1_002]
    info, img, tf_out = got["/camera/info"].msg, got["/camera/image"].msg, got["/tf_static"].msg
    assert type(info) is Kilted["sensor_msgs/msg/CameraInfo"]
    assert not hasattr(info.header, "seq") and info.header.frame_id == "camera"
    assert (info.header.stamp.sec, info.header.stamp.nanosec) == (12, 345)
    np.testing.assert_array_equal(info.d, camera_info.D)  # ROS 1 D/K/R/P -> ROS 2 d/k/r/p
    np.testing.assert_array_equal(info.k, camera_info.K)
    np.testing.assert_array_equal(info.r, camera_info.R)
    np.testing.assert_array_equal(info.p, camera_info.P)
    assert (info.roi.width, info.roi.do_rectify, info.distortion_model) == (4, True, "plumb_bob")
    assert type(img) is Kilted["sensor_msgs/msg/Image"] and img.encoding == "rgb8" and img.step == 18
    np.testing.assert_array_equal(img.data, pixels)
    assert type(tf_out) is Kilted["tf2_msgs/msg/TFMessage"] and len(tf_out.transforms) == 1
    out = tf_out.transforms[0]
    assert type(out) is Kilted["geometry_msgs/msg/TransformStamped"] and out.child_frame_id == "velodyne"
    assert (out.transform.translation.x, out.transform.rotation.w) == (0.27, -0.5)

    # converted messages are plain Kilted messages: they serialise to CDR and write to rosbag2
    with BagWriter(tmp_path / "camera_ros2") as writer:
        for message in got.values():
            writer.write(message.topic, message.msgtype, message.timestamp, message.msg)
    again = {m.topic: m.msg for m in iter_messages(tmp_path / "camera_ros2")}
    np.testing.assert_array_equal(again["/camera/info"].p, camera_info.P)
    assert again["/tf_static"].transforms[0].header.frame_id == "camera"


def test_rosbag2_recorded_with_older_definition_is_converted(tmp_path: Path) -> None:
    """A Humble sensor_msgs/Range (no `variance`, added later) read as Kilted's Range."""
    humble = get_typestore(Stores.ROS2_HUMBLE)
    assert humble.hash_rihs01("sensor_msgs/msg/Range") != TYPESTORE.hash_rihs01("sensor_msgs/msg/Range")
    Range = humble.types["sensor_msgs/msg/Range"]
    stamp = humble.types["builtin_interfaces/msg/Time"](sec=3, nanosec=4)
    header = humble.types["std_msgs/msg/Header"](stamp=stamp, frame_id="sonar")
    msg = Range(header=header, radiation_type=0, field_of_view=0.5, min_range=0.1, max_range=4.0, range=1.25)
    with BagWriter(tmp_path / "humble", storage="sqlite3", typestore=humble) as writer:
        writer.write("/range", "sensor_msgs/msg/Range", 77, msg)
    (message,) = iter_messages(tmp_path / "humble")
    assert type(message.msg) is Kilted["sensor_msgs/msg/Range"]
    assert message.msg.range == 1.25 and message.msg.header.frame_id == "sonar"
    assert message.msg.variance == 0.0  # absent in Humble: the Kilted default


def test_type_unknown_to_kilted_is_read_from_the_bag_definition(tmp_path: Path) -> None:
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("std_msgs/Header header\nuint16[] ring\nstring label\n",
                                      "elite_test_msgs/msg/Ring"))
    Ring = store.types["elite_test_msgs/msg/Ring"]
    header = Kilted["std_msgs/msg/Header"](stamp=Kilted["builtin_interfaces/msg/Time"](sec=1, nanosec=2),
                                           frame_id="lidar")
    with BagWriter(tmp_path / "custom", typestore=store) as writer:
        ring = Ring(header=header, ring=np.array([3, 1, 2], np.uint16), label="a")
        writer.write("/ring", "elite_test_msgs/msg/Ring", 5, ring)
    assert bag_info(tmp_path / "custom") == {"/ring": ("elite_test_msgs/msg/Ring", 1)}
    (message,) = iter_messages(tmp_path / "custom")
    assert message.msgtype == "elite_test_msgs/msg/Ring" and message.msg.label == "a"
    np.testing.assert_array_equal(message.msg.ring, [3, 1, 2])
    assert message.msg.header.frame_id == "lidar"


# ------------------------------------------------------------------------------------------ to_ros2


def test_to_ros2_keeps_kilted_messages_and_shares_point_data(clouds) -> None:
    kilted = clouds["mcap"][0].msg
    assert to_ros2(kilted) is kilted
    noetic = get_typestore(Stores.ROS1_NOETIC)
    ros1_header = noetic.types["std_msgs/msg/Header"](
        seq=3, stamp=noetic.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="f")
    converted = to_ros2(ros1_header, "std_msgs/msg/Header")
    assert type(converted) is Kilted["std_msgs/msg/Header"] and converted.frame_id == "f"
    with pytest.raises(BagError, match="no_pkg/msg/Nothing"):
        to_ros2(ros1_header, "no_pkg/msg/Nothing")
    bad_info = noetic.types["sensor_msgs/msg/CameraInfo"](
        header=ros1_header, height=1, width=1, distortion_model="", D=np.zeros(0), K=np.zeros(8),
        R=np.zeros(9), P=np.zeros(12), binning_x=0, binning_y=0,
        roi=noetic.types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False))
    with pytest.raises(BagError, match=r"\.k: expected 9 elements, got 8"):
        to_ros2(bad_info, "sensor_msgs/msg/CameraInfo")


def test_ros1_cloud_conversion_does_not_copy_point_data(luminar_bags: dict[str, Path]) -> None:
    from elite_ros.bag.reading import _OpenBag

    noetic = get_typestore(Stores.ROS1_NOETIC)
    with _OpenBag(luminar_bags["ros1"]) as bag:
        connection = next(c for c in bag.reader.connections if c.topic == CLOUD_TOPIC)
        _, _, raw = next(bag.reader.messages([connection]))
    ros1_cloud = noetic.deserialize_ros1(raw, CLOUD_TYPE)
    assert hasattr(ros1_cloud.header, "seq")
    cloud = to_ros2(ros1_cloud, CLOUD_TYPE)
    assert type(cloud) is Kilted[CLOUD_TYPE] and not hasattr(cloud.header, "seq")
    assert np.shares_memory(cloud.data, ros1_cloud.data)


@pytest.mark.ros
def test_rclpy_messages_convert_and_write(tmp_path: Path, clouds) -> None:
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    source = clouds["sqlite3"][0].msg
    rclpy_cloud = sensor_msgs.PointCloud2(
        height=source.height, width=source.width, point_step=source.point_step, row_step=source.row_step,
        is_bigendian=source.is_bigendian, is_dense=source.is_dense,
        fields=[sensor_msgs.PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                for f in source.fields])
    rclpy_cloud.header.frame_id = source.header.frame_id
    rclpy_cloud.header.stamp.sec = source.header.stamp.sec
    rclpy_cloud.header.stamp.nanosec = source.header.stamp.nanosec
    rclpy_cloud.data = bytes(source.data)
    converted = to_ros2(rclpy_cloud)  # type taken from the rclpy class
    assert type(converted) is Kilted[CLOUD_TYPE] and bytes(converted.data) == bytes(source.data)
    with BagWriter(tmp_path / "from_rclpy") as writer:
        writer.write(CLOUD_TOPIC, CLOUD_TYPE, 9, rclpy_cloud)
    (message,) = iter_messages(tmp_path / "from_rclpy")
    assert bytes(message.msg.data) == bytes(source.data) and message.msg.fields == source.fields
    assert message.msg.header == source.header


# ------------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_writer_round_trip_keeps_clouds_and_timestamps(tmp_path: Path, clouds, storage: str) -> None:
    source = clouds["ros1"]
    out = tmp_path / "nested" / f"luminar_{storage}"
    with BagWriter(out, storage=storage) as writer:
        assert not out.exists()  # only the partial sibling exists while writing
        assert len(_leftovers(out.parent)) == 1
        for message in source:
            writer.write(message.topic, message.msgtype, message.timestamp, message.msg)
    assert writer.message_count == LUMINAR_CLOUDS
    assert _leftovers(out.parent) == []
    suffix = {"mcap": ".mcap", "sqlite3": ".db3"}[storage]
    assert sorted(p.name for p in out.iterdir()) == sorted(["metadata.yaml", out.name + suffix])
    assert detect_format(out) == storage
    assert bag_info(out) == {CLOUD_TOPIC: (CLOUD_TYPE, LUMINAR_CLOUDS)}
    back = list(iter_messages(out))
    assert [m.timestamp for m in back] == [m.timestamp for m in source]
    for got, want in zip(back, source):
        assert type(got.msg) is Kilted[CLOUD_TYPE]
        assert got.msg.header == want.msg.header and got.msg.fields == want.msg.fields
        assert (got.msg.height, got.msg.width, got.msg.point_step, got.msg.row_step) == (
            want.msg.height, want.msg.width, want.msg.point_step, want.msg.row_step)
        assert bytes(got.msg.data) == bytes(want.msg.data)


def test_writer_refuses_existing_output_and_leaves_input_untouched(tmp_path: Path,
                                                                    luminar_bags: dict[str, Path]) -> None:
    for existing in (luminar_bags["mcap"], luminar_bags["ros1"]):
        before = _tree_digest(existing)
        with pytest.raises(FileExistsError, match=str(existing)):
            BagWriter(existing)
        assert _tree_digest(existing) == before
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(FileExistsError, match="empty_dir"):
        BagWriter(empty, storage="sqlite3")
    assert list(empty.iterdir()) == []


def test_output_created_while_writing_is_not_replaced(tmp_path: Path, clouds) -> None:
    out = tmp_path / "race"
    with pytest.raises(FileExistsError, match="race"):
        with BagWriter(out) as writer:
            writer.write(CLOUD_TOPIC, CLOUD_TYPE, 1, clouds["mcap"][0].msg)
            out.mkdir()
            (out / "theirs.txt").write_text("keep me")
    assert (out / "theirs.txt").read_text() == "keep me" and _leftovers(tmp_path) == []


def test_crash_inside_with_leaves_nothing(tmp_path: Path, clouds) -> None:
    for storage in ("mcap", "sqlite3"):
        out = tmp_path / f"crashed_{storage}"
        with pytest.raises(RuntimeError, match="boom"):
            with BagWriter(out, storage=storage) as writer:
                for message in clouds["mcap"][:2]:
                    writer.write(message.topic, message.msgtype, message.timestamp, message.msg)
                raise RuntimeError("boom")
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_writer_rejects_bad_use(tmp_path: Path, clouds) -> None:
    cloud = clouds["mcap"][0].msg
    with pytest.raises(ValueError, match="storage"):
        BagWriter(tmp_path / "x", storage="rosbag1")
    writer = BagWriter(tmp_path / "outside")
    with pytest.raises(BagError, match="outside the"):
        writer.write(CLOUD_TOPIC, CLOUD_TYPE, 1, cloud)
    with pytest.raises(BagError, match="already has type"):
        with BagWriter(tmp_path / "mixed") as writer:
            writer.write(CLOUD_TOPIC, CLOUD_TYPE, 1, cloud)
            writer.write(CLOUD_TOPIC, "std_msgs/msg/Header", 2, cloud.header)
    with pytest.raises(ValueError, match="timestamp_ns"):
        with BagWriter(tmp_path / "negative") as writer:
            writer.write(CLOUD_TOPIC, CLOUD_TYPE, -1, cloud)
    with pytest.raises(BagError, match="not in the"):
        with BagWriter(tmp_path / "unknown") as writer:
            writer.write("/x", "no_pkg/msg/Nothing", 1, cloud)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ bad paths


def test_bad_paths_give_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.bag"
    for call in (detect_format, bag_info, iter_messages):  # iter_messages fails before iteration
        with pytest.raises(FileNotFoundError, match="missing.bag"):
            call(missing)
    text = tmp_path / "notes.bag"
    text.write_text("not a bag\n")
    with pytest.raises(BagError, match=r"notes\.bag: not a bag"):
        bag_info(text)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(BagError, match=r"folder: not a bag.*metadata\.yaml"):
        list(iter_messages(folder))
    (folder / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  storage_identifier: zip\n")
    with pytest.raises(BagError, match="storage_identifier 'zip'"):
        detect_format(folder)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text(": [")
    with pytest.raises(BagError, match="not valid rosbag2 metadata"):
        detect_format(broken)
    truncated = tmp_path / "truncated.mcap"
    truncated.write_bytes(b"\x89MCAP0\r\n" + b"\0" * 10)
    with pytest.raises(BagError, match="truncated.mcap"):
        bag_info(truncated)
    renamed = tmp_path / "storage.bin"
    renamed.write_bytes(b"\x89MCAP0\r\n" + b"\0" * 10)
    with pytest.raises(BagError, match=r"must be named \*\.mcap"):
        detect_format(renamed)


# ------------------------------------------------------------------------------------------ damaged bags, outputs


def _damaged_copy(source: Path, target: Path, offset_of) -> Path:
    """A copy of a bag (file or folder) with 4096 zero bytes over its storage file at `offset_of(size)`."""
    if source.is_dir():
        shutil.copytree(source, target)
        storage = next(p for p in target.iterdir() if p.suffix in (".db3", ".mcap"))
    else:
        target.mkdir()
        storage = target / source.name
        shutil.copyfile(source, storage)
    storage.chmod(0o644)
    data = bytearray(storage.read_bytes())
    start = offset_of(len(data))
    data[start:start + 4096] = bytes(4096)
    storage.write_bytes(bytes(data))
    return target if source.is_dir() else storage


@pytest.mark.parametrize("container", ["sqlite3", "ros1"])
def test_a_damaged_storage_file_is_one_bag_error_naming_it(luminar_bags: dict[str, Path], tmp_path: Path,
                                                           container: str) -> None:
    """A zeroed sqlite3 page (apsw.CorruptError) or a zeroed piece of an LZ4 chunk (RuntimeError) used to
    escape the message loop as the storage library's own exception."""
    page = 4096
    damaged = _damaged_copy(luminar_bags[container], tmp_path / "damaged", lambda size: size // page // 2 * page)
    with pytest.raises(BagError) as info:
        list(iter_messages(damaged))
    message = str(info.value)
    assert message.startswith(f"{damaged}: cannot read: ") and "\n" not in message


def test_an_output_under_a_file_or_without_permission_is_one_error_naming_it(
        tmp_path: Path, clouds, monkeypatch) -> None:
    """A ValueError (elite_ros.atomic.OutputError: one `error:` line in the CLI), not "[Errno 17] File exists:
    'plain'" about the parent, nor a PermissionError traceback naming the temporary folder."""
    plain = tmp_path / "plain"
    plain.write_text("a file, not a folder\n")
    with pytest.raises(ValueError, match=f"cannot write {plain}/out: {plain} is a file, not a folder"):
        with BagWriter(plain / "out") as writer:
            writer.write(CLOUD_TOPIC, CLOUD_TYPE, 1, clouds["mcap"][0].msg)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: the folder refuses as the kernel would refuse a user
        def refused(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(read_only / ".out.partial-x"))

        monkeypatch.setattr("elite_ros.atomic.tempfile.mkdtemp", refused)
    with pytest.raises(ValueError, match=f"cannot write {read_only}/out: no permission to write in {read_only}"):
        with BagWriter(read_only / "out") as writer:
            writer.write(CLOUD_TOPIC, CLOUD_TYPE, 1, clouds["mcap"][0].msg)
    assert sorted(os.listdir(read_only)) == []
