"""PointCloud2 codec: real Luminar clouds, every datatype and byte order, organised clouds, malformed
messages, property-based fuzzing against a slow per-point reference decoder, and the output builders."""
from __future__ import annotations

import array
import math
import os
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.rosbag1 import Reader as Ros1Reader
from rosbags.rosbag2 import Reader as Ros2Reader
from rosbags.typesys import Stores, get_typestore

from elite_ros import cloud
from elite_ros.cloud import CloudFormatError
from elite_ros.cloud.layout import _buffer
from elite_ros.labels import NUM_CLASSES, packed_rgb, palette_rgb, to_raw_ids

KILTED = get_typestore(Stores.ROS2_KILTED)
NOETIC = get_typestore(Stores.ROS1_NOETIC)
LUMINAR_TOPIC = "/luminar_pointcloud"
#: the Luminar layout as the data README lists it: name -> (offset, datatype)
LUMINAR_FIELDS = {
    "x": (0, cloud.FLOAT32), "y": (4, cloud.FLOAT32), "z": (8, cloud.FLOAT32),
    "intensity": (16, cloud.FLOAT32), "time_sec": (20, cloud.UINT32), "time_nsec": (24, cloud.UINT32),
    "laser_id": (28, cloud.UINT16),
}
STRUCT_CODES = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
#: examples per fuzz test; the closing run of issue 13 sets ELITE_ROS_FUZZ_EXAMPLES=20000
FUZZ_EXAMPLES = int(os.environ.get("ELITE_ROS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UINT32_MAX = 2**32 - 1


# --------------------------------------------------------------------------------------------------
# plain duck-typed messages and helpers


@dataclass
class PlainField:
    name: str
    offset: int
    datatype: int
    count: int


@dataclass
class PlainHeader:
    frame_id: str = "lidar"


@dataclass
class PlainCloud:
    header: Any
    height: int
    width: int
    fields: list
    is_bigendian: bool
    point_step: int
    row_step: int
    data: Any
    is_dense: bool = False


def container(raw: bytes, kind: str) -> Any:
    """`raw` in the container a message library would use."""
    if kind == "bytes":
        return bytes(raw)
    if kind == "bytearray":
        return bytearray(raw)
    if kind == "ndarray":
        return np.frombuffer(raw, dtype=np.uint8).copy()
    if kind == "array":
        a = array.array("B")
        a.frombytes(raw)
        return a
    if kind == "list":
        return list(raw)
    raise AssertionError(kind)


def plain_cloud(fields, point_step, width, raw, *, height=1, row_step=None, is_bigendian=False, kind="bytes"):
    return PlainCloud(
        header=PlainHeader(), height=height, width=width,
        fields=[PlainField(*f) for f in fields], is_bigendian=is_bigendian, point_step=point_step,
        row_step=width * point_step if row_step is None else row_step, data=container(raw, kind),
    )


def xyz_cloud(xyz: np.ndarray, *, kind="bytes", is_bigendian=False) -> PlainCloud:
    """A packed x, y, z, intensity float32 cloud (intensity = 0..N-1)."""
    n = len(xyz)
    pts = np.zeros((n, 4), dtype=">f4" if is_bigendian else "<f4")
    pts[:, :3], pts[:, 3] = xyz, np.arange(n)
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)]
    return plain_cloud(fields, 16, n, pts.tobytes(), is_bigendian=is_bigendian, kind=kind)


def raw_bytes(msg) -> bytes:
    return bytes(np.asarray(_buffer(msg.data)))


def reference_decode(msg, intensity_names=cloud.DEFAULT_INTENSITY_FIELDS):
    """Slow, obviously-correct decoder: one struct.unpack_from per field per point."""
    data = raw_bytes(msg)
    order = ">" if msg.is_bigendian else "<"
    fields = {f.name: f for f in msg.fields}
    f_int = next((fields[n] for n in intensity_names if n in fields), None)

    def value(f, base):
        return struct.unpack_from(order + STRUCT_CODES[f.datatype], data, base + f.offset)[0]

    xyz, intensity, index = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float64 beyond float32 range -> inf
        for flat in range(msg.height * msg.width):  # not row by row: 2**32 - 1 empty rows are valid
            row, col = divmod(flat, msg.width)
            base = row * msg.row_step + col * msg.point_step
            point = [np.float32(value(fields[a], base)) for a in "xyz"]
            if all(math.isfinite(v) for v in point):
                xyz.append(point)
                index.append(flat)
                if f_int is not None:
                    intensity.append(np.float32(value(f_int, base)))
    xyz_arr = np.array(xyz, dtype=np.float32).reshape(-1, 3)
    intensity_arr = np.array(intensity, dtype=np.float32) if f_int is not None else None
    return xyz_arr, intensity_arr, np.array(index, dtype=np.int64)


def reference_field(msg, name):
    """(N, count) values of one field, per point with struct."""
    data = raw_bytes(msg)
    order = ">" if msg.is_bigendian else "<"
    f = next(f for f in msg.fields if f.name == name)
    code = STRUCT_CODES[f.datatype]
    out = []
    for flat in range(msg.height * msg.width):
        row, col = divmod(flat, msg.width)
        base = row * msg.row_step + col * msg.point_step + f.offset
        out.append(struct.unpack_from(f"{order}{f.count}{code}", data, base))
    return out


def assert_scan_matches_reference(scan, msg):
    xyz, intensity, index = reference_decode(msg)
    np.testing.assert_array_equal(scan.index, index)
    np.testing.assert_array_equal(scan.xyz, xyz)
    if intensity is None:
        assert scan.intensity is None
    else:
        np.testing.assert_array_equal(scan.intensity, intensity)  # NaN == NaN here
    assert scan.num_points == msg.height * msg.width


def assert_valid_scan(scan, msg):
    n = msg.height * msg.width
    assert scan.num_points == n
    assert scan.xyz.dtype == np.float32 and scan.xyz.ndim == 2 and scan.xyz.shape[1] == 3
    assert scan.index.dtype == np.int64 and scan.index.shape == (scan.xyz.shape[0],)
    assert np.isfinite(scan.xyz).all()
    assert np.all(np.diff(scan.index) > 0) and (scan.index.size == 0 or (scan.index[0] >= 0 and scan.index[-1] < n))
    if scan.intensity is not None:
        assert scan.intensity.dtype == np.float32 and scan.intensity.shape == scan.index.shape


# --------------------------------------------------------------------------------------------------
# the real Luminar recording


def _ros1_clouds(path: Path):
    with Ros1Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == LUMINAR_TOPIC]
        return [NOETIC.deserialize_ros1(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]


def _ros2_clouds(path: Path):
    with Ros2Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == LUMINAR_TOPIC]
        return [KILTED.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]


@pytest.fixture(scope="module")
def luminar(luminar_bags) -> list:
    return _ros1_clouds(luminar_bags["ros1"])


def test_luminar_clouds_decode_as_the_data_readme_says(luminar):
    assert len(luminar) == 5
    lo, hi = np.inf, 0.0
    for msg in luminar:
        assert msg.height == 1 and msg.point_step == 32 and not msg.is_bigendian and msg.is_dense
        assert msg.header.frame_id == "luminar_lidar"
        assert {f.name: (f.offset, f.datatype) for f in msg.fields} == LUMINAR_FIELDS
        assert 35_000 < msg.width < 37_000
        scan = cloud.decode(msg)
        assert_valid_scan(scan, msg)
        assert len(scan) == msg.width  # is_dense: every point is finite
        np.testing.assert_array_equal(scan.index, np.arange(msg.width))
        ranges = np.linalg.norm(scan.xyz, axis=1)
        lo, hi = min(lo, ranges.min()), max(hi, ranges.max())
        assert np.shares_memory(scan.xyz, msg.data)  # zero-copy view of the message
        points = cloud.read_points(msg)
        assert points.dtype.itemsize == 32 and points.shape == (msg.width,)
        np.testing.assert_array_equal(scan.intensity, points["intensity"])
        assert points["laser_id"].dtype == np.dtype("<u2")
    assert 6.7 < lo < 6.9 and 252 < hi < 254  # README: ranges 6.8-253 m
    assert_scan_matches_reference(cloud.decode(luminar[0]), luminar[0])


def test_luminar_decodes_identically_from_all_three_containers(luminar, luminar_bags):
    expected = [cloud.decode(m) for m in luminar]
    for storage in ("sqlite3", "mcap"):
        clouds = _ros2_clouds(luminar_bags[storage])
        assert len(clouds) == 5
        for msg, ref, ros1 in zip(clouds, expected, luminar):
            assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
                (f.name, f.offset, f.datatype, f.count) for f in ros1.fields]
            scan = cloud.decode(msg)
            np.testing.assert_array_equal(scan.xyz, ref.xyz)
            np.testing.assert_array_equal(scan.intensity, ref.intensity)
            np.testing.assert_array_equal(scan.index, ref.index)


def test_luminar_through_elite_ros_bag(luminar, luminar_bags):
    from elite_ros.bag import iter_messages

    for storage, path in luminar_bags.items():
        msgs = [m.msg for m in iter_messages(path, topics=[LUMINAR_TOPIC])]
        assert len(msgs) == 5, storage
        for msg, ros1 in zip(msgs, luminar):
            np.testing.assert_array_equal(cloud.decode(msg).xyz, cloud.decode(ros1).xyz)


def test_luminar_outputs_serialise_with_the_message_library(luminar, luminar_bags):
    msg = _ros2_clouds(luminar_bags["mcap"])[0]
    n = msg.width
    ids = (np.arange(n) % NUM_CLASSES).astype(np.uint8)
    for out in (
        cloud.with_labels(msg, ids, np.linspace(0, 1, n, dtype=np.float32)),
        cloud.visualization_cloud(msg, ids),
        cloud.filter_cloud(msg, ids != 9),
    ):
        assert type(out) is type(msg) and isinstance(out.data, np.ndarray)
        again = KILTED.deserialize_cdr(KILTED.serialize_cdr(out, out.__msgtype__), out.__msgtype__)
        assert bytes(again.data) == bytes(out.data) and again.fields == out.fields
    ros1_out = cloud.with_labels(luminar[0], (np.arange(luminar[0].width) % 20).astype(np.uint8))
    again = NOETIC.deserialize_ros1(NOETIC.serialize_ros1(ros1_out, ros1_out.__msgtype__), ros1_out.__msgtype__)
    assert again.point_step == 36 and again.fields[-1].name == "class_id"


# --------------------------------------------------------------------------------------------------
# datatypes, byte order, counts, organised clouds


SAMPLE_VALUES = {
    cloud.INT8: [-128, -1, 0, 5, 127], cloud.UINT8: [0, 1, 128, 200, 255],
    cloud.INT16: [-32768, -7, 0, 300, 32767], cloud.UINT16: [0, 1, 40000, 512, 65535],
    cloud.INT32: [-2**31, -5, 0, 70000, 2**31 - 1], cloud.UINT32: [0, 3, 2**31, 123456, 2**32 - 1],
    cloud.FLOAT32: [-1.5, 0.0, 3.25, 1e30, -2e-30], cloud.FLOAT64: [-1.5, 1e300, 3.25, 1e-300, -7.0],
}


@pytest.mark.parametrize("is_bigendian", [False, True])
@pytest.mark.parametrize("datatype", sorted(cloud.DATATYPE_DTYPES))
def test_every_datatype_round_trips(datatype, is_bigendian):
    dtype = cloud.DATATYPE_DTYPES[datatype]
    values = np.array(SAMPLE_VALUES[datatype], dtype=dtype)
    n = len(values)
    msg = cloud.make_cloud(
        {"x": values, "y": values[::-1].copy(), "z": values, "extra": values}, PlainHeader(),
        like=PlainCloud(None, 1, 0, [PlainField("x", 0, 7, 1)], False, 16, 0, b""), is_bigendian=is_bigendian,
    )
    assert isinstance(msg, PlainCloud) and isinstance(msg.fields[0], PlainField) and isinstance(msg.data, bytes)
    assert msg.is_bigendian == is_bigendian
    assert [f.datatype for f in msg.fields] == [datatype] * 4
    assert msg.point_step == 4 * dtype.itemsize and len(msg.data) == n * msg.point_step
    points = cloud.read_points(msg)
    for name in ("x", "z", "extra"):
        np.testing.assert_array_equal(points[name], values)
        assert [v[0] for v in reference_field(msg, name)] == values.tolist()
    scan = cloud.decode(msg)
    assert_scan_matches_reference(scan, msg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.stack([values, values[::-1], values], axis=1).astype(np.float32)
    finite = np.isfinite(expected).all(axis=1)
    np.testing.assert_array_equal(scan.xyz, expected[finite])


def test_fields_with_count_above_one():
    n = 4
    dt = np.dtype({"names": ["x", "y", "z", "normal", "intensity"],
                   "formats": ["<f8", "<f8", "<f8", ("<f4", 3), ("<u2", 2)],
                   "offsets": [0, 8, 16, 24, 38], "itemsize": 48})
    pts = np.zeros(n, dtype=dt)
    pts["x"], pts["y"], pts["z"] = np.arange(n), -np.arange(n), 2.5
    pts["normal"] = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
    pts["intensity"] = np.arange(2 * n).reshape(n, 2) + 100
    fields = [("x", 0, 8, 1), ("y", 8, 8, 1), ("z", 16, 8, 1), ("normal", 24, 7, 3), ("intensity", 38, 4, 2)]
    msg = plain_cloud(fields, 48, n, pts.tobytes())
    points = cloud.read_points(msg)
    assert points["normal"].shape == (n, 3)
    np.testing.assert_array_equal(points["normal"], pts["normal"])
    np.testing.assert_array_equal(points["intensity"], pts["intensity"])
    scan = cloud.decode(msg)
    np.testing.assert_array_equal(scan.intensity, pts["intensity"][:, 0].astype(np.float32))  # first element
    assert_scan_matches_reference(scan, msg)
    out = cloud.make_cloud({"x": pts["x"], "normal": pts["normal"]}, PlainHeader())
    assert [(f.name, f.offset, f.count) for f in out.fields] == [("x", 0, 1), ("normal", 8, 3)]
    np.testing.assert_array_equal(cloud.read_points(out)["normal"], pts["normal"])


@pytest.mark.parametrize("is_bigendian", [False, True])
def test_organised_cloud_with_row_padding(is_bigendian):
    height, width, step, row_pad = 3, 4, 20, 7
    row_step = width * step + row_pad
    order = ">" if is_bigendian else "<"
    raw = bytearray(b"\xff" * (row_step * height + 5))  # padding full of NaN bit patterns
    expected = []
    for r in range(height):
        for c in range(width):
            p = (r * width + c, 1.0 + r, -2.0 * c, 7.0 + r * width + c)
            if (r, c) == (1, 2):
                p = (p[0], float("nan"), 0.0, 1.0)
            struct.pack_into(order + "Hxxfff", raw, r * row_step + c * step, p[0], p[1], p[2], p[3])
            expected.append(p)
    fields = [("ring", 0, 4, 1), ("x", 4, 7, 1), ("y", 8, 7, 1), ("z", 12, 7, 1)]
    msg = plain_cloud(fields, step, width, bytes(raw), height=height, row_step=row_step, is_bigendian=is_bigendian)
    scan = cloud.decode(msg, intensity_field="ring")
    assert scan.num_points == 12 and len(scan) == 11
    assert 6 not in scan.index  # (row 1, col 2) is NaN
    np.testing.assert_array_equal(scan.intensity, [e[0] for e in expected if e[0] != 6])
    assert_scan_matches_reference(cloud.decode(msg), msg)
    points = cloud.read_points(msg)
    assert points.shape == (12,)
    np.testing.assert_array_equal(points["ring"], np.arange(12))

    ids = np.arange(12, dtype=np.uint8) % NUM_CLASSES
    out = cloud.with_labels(msg, ids, np.full(12, 0.5, np.float32))
    assert (out.height, out.width, out.row_step) == (height, width, width * out.point_step)  # rows packed
    assert out.is_bigendian == is_bigendian
    np.testing.assert_array_equal(cloud.read_points(out)["class_id"], ids)
    np.testing.assert_array_equal(cloud.decode(out).xyz, scan.xyz)

    kept = cloud.filter_cloud(msg, np.arange(12) % 5 != 0)
    assert (kept.height, kept.width, kept.point_step) == (1, 9, step)
    np.testing.assert_array_equal(cloud.read_points(kept)["ring"], [i for i in range(12) if i % 5])


def test_float64_beyond_float32_range_and_non_finite_points_are_dropped():
    xyz = np.array([[1, 2, 3], [1e300, 0, 0], [np.inf, 0, 0], [0, -np.inf, 0], [0, 0, np.nan], [4, 5, 6]])
    msg = cloud.make_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}, PlainHeader())
    assert not msg.is_dense
    scan = cloud.decode(msg)
    np.testing.assert_array_equal(scan.index, [0, 5])
    np.testing.assert_array_equal(scan.xyz, [[1, 2, 3], [4, 5, 6]])
    assert scan.xyz.dtype == np.float32 and scan.intensity is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_bad_point_in_a_large_cloud_is_found(bad):
    rng = np.random.default_rng(1)
    xyz = rng.normal(scale=50, size=(120_000, 3)).astype(np.float32)
    for where in (0, 77_777, 119_999):
        xyz_bad = xyz.copy()
        xyz_bad[where, where % 3] = bad
        scan = cloud.decode(xyz_cloud(xyz_bad, kind="ndarray"))
        assert len(scan) == 119_999 and where not in scan.index
        np.testing.assert_array_equal(scan.xyz, np.delete(xyz, where, axis=0))
        np.testing.assert_array_equal(scan.intensity, np.delete(np.arange(120_000, dtype=np.float32), where))


def test_huge_finite_values_are_kept():
    xyz = np.full((1000, 3), 3.0e38, dtype=np.float32)  # sums overflow float32; every value is finite
    scan = cloud.decode(xyz_cloud(xyz))
    assert len(scan) == 1000


def test_intensity_field_choice():
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("reflectivity", 12, 4, 1), ("i", 14, 3, 1)]
    raw = struct.pack("<fffHh", 1, 2, 3, 500, -4)
    msg = plain_cloud(fields, 16, 1, raw)
    assert cloud.decode(msg).intensity.tolist() == [500.0]  # default candidates: reflectivity before i
    assert cloud.decode(msg, intensity_field="i").intensity.tolist() == [-4.0]
    assert cloud.decode(msg, intensity_field=("missing", "i")).intensity.tolist() == [-4.0]
    assert cloud.decode(msg, intensity_field=None).intensity is None
    assert cloud.decode(msg, intensity_field=()).intensity is None
    assert cloud.decode(msg, intensity_field="missing").intensity is None


def test_contiguous_copy_of_a_scan():
    xyz = np.arange(30, dtype=np.float32).reshape(10, 3)
    xyz[4, 1] = np.nan
    scan = cloud.decode(xyz_cloud(xyz, kind="ndarray"))
    compact = scan.contiguous()
    for view, copy in ((scan.xyz, compact.xyz), (scan.intensity, compact.intensity), (scan.index, compact.index)):
        assert copy.flags.c_contiguous and copy.flags.writeable and not np.shares_memory(view, copy)
        np.testing.assert_array_equal(copy, view)
    assert compact.num_points == 10 and len(compact) == 9


def test_scan_arrays_are_read_only_and_empty_clouds_work():
    xyz = np.array([[1, 2, 3], [np.nan, 0, 0]], dtype=np.float32)
    for kind in ("bytes", "ndarray", "array"):
        scan = cloud.decode(xyz_cloud(xyz, kind=kind))
        for a in (scan.xyz, scan.intensity, scan.index):
            assert not a.flags.writeable
    empty = plain_cloud([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, 0, b"")
    scan = cloud.decode(empty)
    assert scan.xyz.shape == (0, 3) and scan.index.shape == (0,) and scan.num_points == 0
    assert cloud.with_labels(empty, np.zeros(0, np.uint8)).width == 0
    assert cloud.filter_cloud(empty, np.zeros(0, bool)).width == 0
    assert cloud.visualization_cloud(empty, np.zeros(0, np.uint8)).width == 0


# --------------------------------------------------------------------------------------------------
# malformed messages


def _good(**changes):
    fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)]
    msg = plain_cloud(fields, 16, 3, bytes(48))
    return replace(msg, **changes)


MALFORMED = {
    "data shorter than row_step*height": (_good(data=bytes(47)), "data holds 47 bytes, less than row_step 48"),
    "field ending past point_step": (
        _good(fields=[PlainField("x", 0, 7, 1), PlainField("y", 4, 7, 1), PlainField("z", 14, 7, 1)]),
        "field 'z' ends at byte 18, past point_step 16"),
    "row_step below width*point_step": (_good(row_step=40), "row_step 40 < width 3 x point_step 16"),
    "missing z": (_good(fields=[PlainField("x", 0, 7, 1), PlainField("y", 4, 7, 1)]), "no 'z' field"),
    "unknown datatype": (_good(fields=[PlainField("x", 0, 9, 1)]), "field 'x' has unknown datatype 9"),
    "datatype zero": (_good(fields=[PlainField("x", 0, 0, 1)]), "unknown datatype 0"),
    "duplicate field names": (
        _good(fields=[PlainField("x", 0, 7, 1), PlainField("x", 4, 7, 1)]), "duplicate field name 'x'"),
    "overlapping fields": (
        _good(fields=[PlainField("x", 0, 7, 1), PlainField("y", 2, 7, 1), PlainField("z", 8, 7, 1)]),
        "fields 'x' (bytes 0..3) and 'y' (from byte 2) overlap"),
    "count zero": (_good(fields=[PlainField("x", 0, 7, 0)]), "field 'x' has count 0"),
    "negative offset": (_good(fields=[PlainField("x", -4, 7, 1)]), "field 'x' offset must be >= 0"),
    "non-integer width": (_good(width=2.5), "width must be an integer"),
    "point_step zero": (_good(point_step=0, fields=[]), "point_step is 0"),
    "empty field name": (_good(fields=[PlainField("", 0, 7, 1)]), "invalid name"),
    "fields not a list": (_good(fields=7), "fields must be a sequence"),
    "data of no bytes": (_good(data=3.5), "holds no bytes"),
    "data values above 255": (_good(data=[300] * 48), "bytes 0..255"),
    "data of wide ints": (_good(data=np.zeros(48, np.int32)), "must hold bytes"),
    # legal uint32 values numpy cannot lay out (a dtype's size is a C int), and duck-typed values beyond them
    "point_step 2**31": (_good(point_step=2**31, width=0), "point_step 2147483648 is larger than"),
    "point_step uint32 max": (_good(point_step=2**32 - 1), "point_step 4294967295 is larger than"),
    "count 2**31": (_good(fields=[PlainField("x", 0, 7, 2**31)]), "field 'x' ends at byte 8589934592"),
    "offset uint32 max": (_good(fields=[PlainField("x", 2**32 - 1, 7, 1)]), "field 'x' ends at byte 4294967299"),
    "point_step beyond uint32": (_good(point_step=2**64), "point_step is 18446744073709551616, beyond the uint32"),
    "height beyond uint32": (_good(height=2**32), "height is 4294967296, beyond the uint32"),
    "count beyond uint32": (_good(fields=[PlainField("x", 0, 7, 2**40)]), "field 'x' count is 1099511627776"),
    "offset beyond uint32": (_good(fields=[PlainField("x", 2**33, 7, 1)]), "field 'x' offset is 8589934592"),
    "datatype beyond uint8": (_good(fields=[PlainField("x", 0, 263, 1)]), "field 'x' datatype is 263, beyond"),
    "is_bigendian not a bool": (_good(is_bigendian=np.array([1, 0])), "is_bigendian must be a bool"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_message_raises_cloud_format_error_naming_the_problem(case):
    msg, reason = MALFORMED[case]
    with pytest.raises(CloudFormatError) as info:
        cloud.decode(msg)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_layout_cache_never_skips_validation():
    """The layout cache compares keys with ==, where 0.0 == 0 and 4.0 == 4: a float offset is refused even
    right after the same layout with int offsets was decoded (and cached)."""
    good = _good()  # x, y, z, intensity float32 at 0, 4, 8, 12
    same = [(f.name, f.offset, f.datatype, f.count) for f in good.fields]
    floats = _good(fields=[PlainField(n, float(o), d, c) for n, o, d, c in same])
    float_count = _good(fields=[PlainField(n, o, d, 1.0 if n == "x" else c) for n, o, d, c in same])
    assert [(f.name, f.offset, f.datatype, f.count) for f in floats.fields] == same  # == although floats
    for _ in range(2):  # before and after the int layout is in the cache
        with pytest.raises(CloudFormatError, match="field 'x' offset must be an integer, got float 0.0"):
            cloud.decode(floats)
        with pytest.raises(CloudFormatError, match="field 'x' count must be an integer, got float 1.0"):
            cloud.decode(float_count)
        assert len(cloud.decode(good)) == 3
    numpy_ints = _good(fields=[PlainField("x", np.int64(0), np.uint8(7), 1), PlainField("y", 4, 7, 1),
                               PlainField("z", 8, 7, 1)])
    assert len(cloud.decode(numpy_ints)) == 3  # integer types are fine


@pytest.mark.parametrize("header", [
    {"point_step": 2**31, "width": 0}, {"point_step": 2**31 + 16}, {"point_step": 2**32 - 1, "row_step": 2**32 - 1},
    {"fields": [PlainField("x", 0, 7, 2**31), PlainField("y", 4, 7, 1), PlainField("z", 8, 7, 1)]},
    {"point_step": 2**64}, {"width": -1}, {"fields": [PlainField("x", 0, 2**8, 1)]},
])
def test_header_values_across_their_ros_range_are_refused_by_every_entry_point(header):
    """Every entry point refuses them with CloudFormatError (numpy said "integer won't fit into a C int")."""
    msg = _good(**header)
    calls = {
        "decode": lambda: cloud.decode(msg), "read_points": lambda: cloud.read_points(msg),
        "with_labels": lambda: cloud.with_labels(msg, np.zeros(3, np.uint8), np.zeros(3, np.float32)),
        "label": lambda: cloud.with_labels(msg, np.zeros(3, np.uint8), label_format="label"),
        "visualization_cloud": lambda: cloud.visualization_cloud(msg, np.zeros(3, np.uint8)),
        "filter_cloud": lambda: cloud.filter_cloud(msg, np.ones(3, bool)),
    }
    for name, call in calls.items():
        with pytest.raises(CloudFormatError) as info:
            call()
        assert "\n" not in str(info.value), name


def test_outputs_a_point_cloud2_cannot_hold_are_refused():
    """An empty cloud of the largest point_step numpy lays out decodes; its labelled copy would need a larger
    point_step than a PointCloud2 can have here, so with_labels refuses it instead of building it."""
    msg = _good(point_step=2**31 - 1, width=0, data=b"")
    assert len(cloud.decode(msg)) == 0 and len(cloud.filter_cloud(msg, np.ones(0, bool)).data) == 0
    with pytest.raises(CloudFormatError, match="output cloud would have point_step 2147483656"):
        cloud.with_labels(msg, np.zeros(0, np.uint8), np.zeros(0, np.float32))


def test_not_a_point_cloud():
    with pytest.raises(CloudFormatError, match="PlainHeader is not a PointCloud2: no attribute 'height'"):
        cloud.decode(PlainHeader())
    with pytest.raises(CloudFormatError, match="PointField .* no attribute"):
        cloud.decode(_good(fields=[PlainHeader()]))


def test_output_arguments_are_checked():
    msg = _good()
    with pytest.raises(CloudFormatError, match=r"class_id must have shape \(3,\)"):
        cloud.with_labels(msg, np.zeros(2, np.uint8))
    with pytest.raises(CloudFormatError, match=r"probability must have shape \(3,\)"):
        cloud.with_labels(msg, np.zeros(3, np.uint8), np.zeros(4, np.float32))
    with pytest.raises(CloudFormatError, match="class_id must hold integers"):
        cloud.with_labels(msg, np.zeros(3))
    with pytest.raises(CloudFormatError, match=r"class_id values must lie in 0..19"):
        cloud.with_labels(msg, np.array([0, 1, 20]), label_format="label")
    with pytest.raises(CloudFormatError, match=r"0..255"):
        cloud.with_labels(msg, np.array([0, 1, 256]))
    with pytest.raises(ValueError, match="label_format"):
        cloud.with_labels(msg, np.zeros(3, np.uint8), label_format="labels")
    with pytest.raises(CloudFormatError, match="keep must be a boolean mask"):
        cloud.filter_cloud(msg, np.array([0, 1, 2]))
    with pytest.raises(CloudFormatError, match=r"keep must have shape \(3,\)"):
        cloud.filter_cloud(msg, np.ones(4, bool))
    with pytest.raises(CloudFormatError, match=r"class_id must have shape \(3,\)"):
        cloud.visualization_cloud(msg, np.zeros(2, np.uint8))
    with pytest.raises(CloudFormatError, match=r"values must lie in 0..1\b"):
        cloud.visualization_cloud(msg, np.array([0, 1, 2]), palette=np.zeros((2, 3), np.uint8))
    with pytest.raises(CloudFormatError, match="field 'x' has dtype bool"):
        cloud.make_cloud({"x": np.zeros(3, bool)}, PlainHeader())
    with pytest.raises(CloudFormatError, match="field 'y' has 2 points"):
        cloud.make_cloud({"x": np.zeros(3), "y": np.zeros(2)}, PlainHeader())


def test_existing_output_field_needs_overwrite():
    base = xyz_cloud(np.ones((3, 3), np.float32))
    ids = np.array([1, 2, 3], np.uint8)
    labelled = cloud.with_labels(base, ids, np.full(3, 0.25))
    with pytest.raises(CloudFormatError, match="already has a field named 'class_id'"):
        cloud.with_labels(labelled, ids)
    # same datatype: rewritten in place, layout unchanged
    again = cloud.with_labels(labelled, ids[::-1].copy(), np.full(3, 0.75), overwrite=True)
    assert again.point_step == labelled.point_step
    assert [f.name for f in again.fields] == [f.name for f in labelled.fields]
    np.testing.assert_array_equal(cloud.read_points(again)["class_id"], ids[::-1])
    np.testing.assert_array_equal(cloud.read_points(again)["probability"], 0.75)
    # a different datatype: the old field leaves `fields`, the new one is appended
    odd = replace(base, fields=base.fields[:3] + [PlainField("label", 12, cloud.FLOAT32, 1)])
    with pytest.raises(CloudFormatError, match="already has a field named 'label'"):
        cloud.with_labels(odd, ids, label_format="label")
    out = cloud.with_labels(odd, ids, label_format="label", overwrite=True)
    assert [(f.name, f.datatype) for f in out.fields] == [
        ("x", 7), ("y", 7), ("z", 7), ("label", cloud.UINT32)]
    np.testing.assert_array_equal(cloud.read_points(out)["label"], to_raw_ids(ids))


# --------------------------------------------------------------------------------------------------
# output builders


@pytest.mark.parametrize("kind", ["bytes", "ndarray", "array", "bytearray"])
@pytest.mark.parametrize("is_bigendian", [False, True])
@pytest.mark.parametrize("label_format", ["class_id", "label"])
def test_labelled_cloud_decodes_back(label_format, is_bigendian, kind):
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    xyz[7] = np.nan
    msg = xyz_cloud(xyz, kind=kind, is_bigendian=is_bigendian)
    ids = rng.integers(0, NUM_CLASSES, 50).astype(np.uint8)
    prob = rng.random(50).astype(np.float32)
    out = cloud.with_labels(msg, ids, prob, label_format=label_format)
    assert type(out) is PlainCloud and type(out.data) is type(msg.data) and out.header is msg.header
    assert out.is_bigendian == is_bigendian and out.point_step == 24 and out.row_step == 50 * 24
    assert out.fields[:4] == msg.fields  # input fields kept as they were
    name = "class_id" if label_format == "class_id" else "label"
    if label_format == "class_id":  # widest first, then the 1-byte id widened over the padding
        assert [(f.name, f.offset, f.datatype) for f in out.fields[4:]] == [
            ("probability", 16, cloud.FLOAT32), ("class_id", 20, cloud.UINT8)]
    else:
        assert [(f.name, f.offset, f.datatype) for f in out.fields[4:]] == [
            ("label", 16, cloud.UINT32), ("probability", 20, cloud.FLOAT32)]
    scan_in, scan_out = cloud.decode(msg), cloud.decode(out)
    np.testing.assert_array_equal(scan_out.xyz, scan_in.xyz)
    np.testing.assert_array_equal(scan_out.intensity, scan_in.intensity)
    np.testing.assert_array_equal(scan_out.index, scan_in.index)
    points = cloud.read_points(out)
    expected = ids if label_format == "class_id" else to_raw_ids(ids)
    np.testing.assert_array_equal(points[name], expected)
    np.testing.assert_array_equal(points["probability"], prob)
    assert [v[0] for v in reference_field(out, name)] == expected.tolist()  # byte order really as declared
    grid = np.frombuffer(raw_bytes(out), np.uint8).reshape(50, 24)
    np.testing.assert_array_equal(grid[:, :16], np.frombuffer(raw_bytes(msg), np.uint8).reshape(50, 16))
    if label_format == "class_id":
        assert not grid[:, 21:24].any()  # padding is zero


def test_labels_without_probability_and_in_luminar_layout(luminar):
    msg = luminar[1]
    n = msg.width
    ids = (np.arange(n) % NUM_CLASSES).astype(np.uint8)
    out = cloud.with_labels(msg, ids)
    assert out.point_step == 36 and [f.name for f in out.fields][-1] == "class_id"
    assert out.fields[-1].offset == 32
    grid = np.frombuffer(raw_bytes(out), np.uint8).reshape(n, 36)
    np.testing.assert_array_equal(grid[:, :32], np.asarray(msg.data).reshape(n, 32))  # padding kept
    assert not grid[:, 33:].any()
    out = cloud.with_labels(msg, ids, np.ones(n, np.float32), label_format="label")
    assert out.point_step == 40
    np.testing.assert_array_equal(cloud.read_points(out)["label"], to_raw_ids(ids))
    np.testing.assert_array_equal(cloud.read_points(out)["laser_id"], cloud.read_points(msg)["laser_id"])


@pytest.mark.parametrize("is_bigendian", [False, True])
def test_visualization_colours_match_the_palette(is_bigendian):
    rng = np.random.default_rng(4)
    xyz = rng.normal(size=(40, 3)).astype(np.float32)
    xyz[[3, 30]] = np.nan
    msg = xyz_cloud(xyz, kind="ndarray", is_bigendian=is_bigendian)
    ids = rng.integers(0, NUM_CLASSES, 40).astype(np.uint8)
    out = cloud.visualization_cloud(msg, ids)
    assert [(f.name, f.offset, f.datatype) for f in out.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7)]
    assert (out.height, out.width, out.point_step, out.is_bigendian, out.is_dense) == (1, 38, 16, is_bigendian, True)
    points = cloud.read_points(out)
    keep = np.isfinite(xyz).all(axis=1)
    np.testing.assert_array_equal(np.stack([points["x"], points["y"], points["z"]], 1), xyz[keep])
    packed = points["rgb"].astype(np.float32).view(np.uint32)
    np.testing.assert_array_equal(packed, packed_rgb(ids[keep]))
    pal = palette_rgb()
    r, g, b = (packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF
    np.testing.assert_array_equal(np.stack([r, g, b], 1), pal[ids[keep]])
    custom = np.array([[1, 2, 3]] * 5 + [[250, 128, 7]] * 15, np.uint8)
    out = cloud.visualization_cloud(msg, ids, palette=custom)
    packed = cloud.read_points(out)["rgb"].astype(np.float32).view(np.uint32)
    np.testing.assert_array_equal(packed, np.where(ids[keep] < 5, 0x010203, 0xFA8007))


@pytest.mark.parametrize("kind", ["bytes", "ndarray", "array"])
def test_filter_keeps_exactly_the_chosen_points(kind, luminar):
    rng = np.random.default_rng(5)
    msg = replace(xyz_cloud(rng.normal(size=(30, 3)).astype(np.float32), kind=kind), is_dense=True)
    keep = rng.random(30) < 0.4
    out = cloud.filter_cloud(msg, keep)
    assert type(out.data) is type(msg.data) and out.fields == msg.fields and out.is_dense
    assert (out.height, out.width, out.point_step, out.row_step) == (1, keep.sum(), 16, keep.sum() * 16)
    np.testing.assert_array_equal(
        np.frombuffer(raw_bytes(out), np.uint8).reshape(-1, 16),
        np.frombuffer(raw_bytes(msg), np.uint8).reshape(30, 16)[keep])
    np.testing.assert_array_equal(cloud.decode(out).intensity, np.flatnonzero(keep))
    big = luminar[2]
    keep = np.arange(big.width) % 3 == 1
    np.testing.assert_array_equal(cloud.read_points(cloud.filter_cloud(big, keep)), cloud.read_points(big)[keep])


def test_make_cloud_defaults_to_the_kilted_typestore():
    header = KILTED.types["std_msgs/msg/Header"](
        stamp=KILTED.types["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="map")
    msg = cloud.make_cloud({"x": np.zeros(2, np.float32), "flag": np.array([1, 0], np.uint8),
                            "t": np.array([1.5, 2.5])}, header)
    assert msg.__msgtype__ == "sensor_msgs/msg/PointCloud2" and isinstance(msg.data, np.ndarray)
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [("x", 0, 7), ("flag", 4, 2), ("t", 8, 8)]
    assert msg.point_step == 16 and msg.row_step == 32
    assert not np.asarray(msg.data).reshape(2, 16)[:, 5:8].any()  # zero padding
    KILTED.serialize_cdr(msg, msg.__msgtype__)


@pytest.mark.ros
def test_rclpy_messages():
    msgs = pytest.importorskip("sensor_msgs.msg")
    from std_msgs.msg import Header

    n = 20
    pts = np.zeros((n, 4), np.float32)
    pts[:, 0], pts[:, 3] = np.arange(n), 10
    pts[5, 1] = np.nan
    data = array.array("B")
    data.frombytes(pts.tobytes())
    fields = [msgs.PointField(name=c, offset=4 * i, datatype=msgs.PointField.FLOAT32, count=1)
              for i, c in enumerate(["x", "y", "z", "intensity"])]
    msg = msgs.PointCloud2(header=Header(frame_id="velodyne"), height=1, width=n, fields=fields,
                           is_bigendian=False, point_step=16, row_step=16 * n, data=data, is_dense=False)
    scan = cloud.decode(msg)
    assert len(scan) == n - 1 and 5 not in scan.index
    ids = (np.arange(n) % NUM_CLASSES).astype(np.uint8)
    outputs = (
        cloud.with_labels(msg, ids, np.full(n, 0.5, np.float32)), cloud.with_labels(msg, ids, label_format="label"),
        cloud.visualization_cloud(msg, ids), cloud.filter_cloud(msg, ids > 3),
    )
    for out in outputs:
        assert type(out) is msgs.PointCloud2 and isinstance(out.data, array.array)
        assert all(type(f) is msgs.PointField for f in out.fields)
        assert out.header.frame_id == "velodyne"
        assert len(out.data) == out.row_step * out.height
    out = cloud.with_labels(msg, ids, np.full(n, 0.5, np.float32))
    np.testing.assert_array_equal(cloud.read_points(out)["class_id"], ids)
    np.testing.assert_array_equal(cloud.decode(out).xyz, scan.xyz)
    serialization = pytest.importorskip("rclpy.serialization")  # rclpy's own CDR: the message is well formed
    again = serialization.deserialize_message(serialization.serialize_message(out), msgs.PointCloud2)
    assert bytes(again.data) == bytes(out.data) and again.fields == out.fields and again.point_step == 24
    made = cloud.make_cloud({"x": np.ones(3, np.float32)}, Header(frame_id="m"), like=msg)
    assert type(made) is msgs.PointCloud2 and isinstance(made.data, array.array) and made.width == 3


# --------------------------------------------------------------------------------------------------
# property-based fuzzing

FIELD_NAMES = ["intensity", "reflectivity", "i", "t", "ring", "normal", "rgb"]


@st.composite
def valid_clouds(draw):
    extra = draw(st.lists(st.sampled_from(FIELD_NAMES), unique=True, max_size=3))
    # half the time x, y, z are one block of adjacent FLOAT32 (the usual driver layout, decoded as a view)
    xyz_block = draw(st.booleans())
    units = ([("x", "y", "z")] if xyz_block else [("x",), ("y",), ("z",)]) + [(name,) for name in extra]
    datatypes = st.one_of(st.just(cloud.FLOAT32), st.integers(1, 8))
    specs = {name: (draw(datatypes), draw(st.integers(1, 2) if name in "xyz" else st.integers(1, 3)))
             for name in ["x", "y", "z"] + extra}
    if xyz_block:
        specs.update({name: (cloud.FLOAT32, 1) for name in "xyz"})
    cursor, fields = 0, []
    for unit in draw(st.permutations(units)):  # byte order of the fields, independent of list order
        cursor += draw(st.integers(0, 5))  # padding, often unaligned
        for name in unit:
            datatype, count = specs[name]
            fields.append((name, cursor, datatype, count))
            cursor += cloud.DATATYPE_DTYPES[datatype].itemsize * count
    point_step = cursor + draw(st.integers(0, 6))
    height, width = draw(st.integers(1, 3)), draw(st.integers(0, 6))
    row_step = width * point_step + draw(st.integers(0, 5))
    size = row_step * height + draw(st.integers(0, 4))
    raw = draw(st.one_of(
        st.binary(min_size=size, max_size=size),  # any bit pattern, NaN and inf included
        st.builds(lambda b: b * size, st.sampled_from([b"\x00", b"\x3f", b"\x41"])),
    ))
    return plain_cloud(
        draw(st.permutations(fields)), point_step, width, raw, height=height, row_step=row_step,
        is_bigendian=draw(st.booleans()),
        kind=draw(st.sampled_from(["bytes", "ndarray", "array", "bytearray", "list"])),
    )


@FUZZ
@given(msg=valid_clouds(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_valid_layouts_decode_like_the_reference(msg, seed):
    scan = cloud.decode(msg)
    assert_valid_scan(scan, msg)
    assert_scan_matches_reference(scan, msg)
    points = cloud.read_points(msg)
    for f in msg.fields if len(points) else ():
        expected = reference_field(msg, f.name)
        got = points[f.name].reshape(len(expected), -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_array_equal(got, np.array(expected, dtype=got.dtype).reshape(got.shape))

    n = msg.height * msg.width
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, NUM_CLASSES, n).astype(np.uint8)
    prob = rng.random(n).astype(np.float32)
    label_format = ("class_id", "label")[seed % 2]
    name = "class_id" if label_format == "class_id" else "label"
    if any(f.name in (name, "probability") for f in msg.fields):
        return
    out = cloud.with_labels(msg, ids, prob, label_format=label_format)
    assert type(out.data) is type(msg.data)
    labelled = cloud.read_points(out)
    np.testing.assert_array_equal(labelled[name], ids if name == "class_id" else to_raw_ids(ids))
    np.testing.assert_array_equal(labelled["probability"], prob)
    again = cloud.decode(out)
    np.testing.assert_array_equal(again.xyz, scan.xyz)
    np.testing.assert_array_equal(again.index, scan.index)
    keep = rng.random(n) < 0.5
    kept = cloud.filter_cloud(msg, keep)
    assert kept.width == keep.sum()
    kept_points = cloud.read_points(kept)
    for f in msg.fields:
        got, expected = kept_points[f.name], points[f.name][keep]
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(expected).tobytes()


@st.composite
def corrupted_clouds(draw):
    msg = draw(valid_clouds())
    fields = list(msg.fields)
    what = draw(st.sampled_from([
        "truncate", "offset", "datatype", "count", "point_step", "row_step", "width", "height", "drop",
        "duplicate", "name", "bigendian", "data_type",
    ]))
    big = st.one_of(st.integers(-8, 80), uint32_values())  # plausible, and the whole uint32 range
    if what == "truncate":
        raw = raw_bytes(msg)
        msg = replace(msg, data=container(raw[: draw(st.integers(0, max(0, len(raw) - 1)))], "bytes"))
    elif what in ("offset", "datatype", "count"):
        i = draw(st.integers(0, len(fields) - 1))
        value = draw({"offset": big, "count": big, "datatype": st.one_of(st.integers(-3, 12), uint8_values())}[what])
        fields[i] = replace(fields[i], **{what: value})
    elif what in ("point_step", "row_step", "width", "height"):
        msg = replace(msg, **{what: draw(big)})
    elif what == "drop":
        del fields[draw(st.integers(0, len(fields) - 1))]
    elif what == "duplicate":
        fields.append(replace(fields[draw(st.integers(0, len(fields) - 1))]))
    elif what == "name":
        fields[draw(st.integers(0, len(fields) - 1))] = replace(
            fields[0], name=draw(st.sampled_from(["", "x", "y", None, 5])))
    elif what == "bigendian":
        msg = replace(msg, is_bigendian=not msg.is_bigendian)
    elif what == "data_type":
        msg = replace(msg, data=draw(st.sampled_from([None, 4, "text", np.zeros(3, np.float64), [1, -1]])))
    return replace(msg, fields=fields)


@FUZZ
@given(msg=corrupted_clouds())
def test_fuzz_corrupted_messages_decode_or_raise_cloud_format_error(msg):
    try:
        scan = cloud.decode(msg)
    except CloudFormatError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert_valid_scan(scan, msg)
        assert_scan_matches_reference(scan, msg)
    n = None
    try:
        n = len(cloud.read_points(msg))
    except CloudFormatError:
        pass
    if n is not None:
        out = cloud.filter_cloud(msg, np.ones(n, bool))
        assert raw_bytes(out) == b"".join(
            raw_bytes(msg)[r * msg.row_step + c * msg.point_step:][: msg.point_step]
            for r, c in (divmod(flat, msg.width) for flat in range(n)))


def uint32_values():
    """Any uint32 (PointCloud2's height, width, point_step, row_step; PointField's offset, count), with its
    edges drawn often: 2**31 - 1 / 2**31 (numpy's C int), 2**32 - 1."""
    edges = [0, 1, 2**31 - 1, 2**31, 2**31 + 1, UINT32_MAX - 1, UINT32_MAX]
    return st.one_of(st.integers(0, UINT32_MAX), st.sampled_from(edges), st.integers(0, 64))


def uint8_values():
    """Any uint8 (PointField.datatype)."""
    return st.integers(0, 255)


def beyond_ros_types():
    """What a duck-typed message may carry where ROS has a uint32 / uint8: negative, past uint64, numpy
    integers, floats, strings, None."""
    return st.one_of(
        st.integers(max_value=-1), st.integers(min_value=UINT32_MAX + 1, max_value=2**70),
        st.sampled_from([np.uint64(2**64 - 1), np.int64(-1), np.uint32(UINT32_MAX), np.int8(-128)]),
        st.floats(allow_nan=True), st.text(max_size=3), st.none(),
    )


@st.composite
def full_range_headers(draw):
    """A valid cloud whose header fields are each kept or redrawn: over the field's whole ROS type range
    (uint32 / uint8 / bool), or, for duck-typed messages, beyond it."""
    msg = draw(valid_clouds())
    duck = draw(st.booleans())

    def redraw(current, ros_range):
        options = [st.just(current), ros_range] + ([beyond_ros_types()] if duck else [])
        return draw(st.one_of(*options))

    fields = [replace(f, offset=redraw(f.offset, uint32_values()), datatype=redraw(f.datatype, uint8_values()),
                      count=redraw(f.count, uint32_values())) for f in msg.fields]
    header = {name: redraw(getattr(msg, name), uint32_values())
              for name in ("height", "width", "point_step", "row_step")}
    header["is_bigendian"] = redraw(msg.is_bigendian, st.booleans())
    return replace(msg, fields=fields, **header)


def only_cloud_format_errors(call) -> Any:
    """call()'s result, or None when it raised CloudFormatError (one line); any other exception fails."""
    try:
        return call()
    except CloudFormatError as err:
        assert str(err) and "\n" not in str(err)
        return None


@FUZZ
@given(msg=full_range_headers(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_full_range_headers_raise_only_cloud_format_error(msg, seed):
    """decode, read_points and the output builders on headers over the full range of their ROS types (and
    beyond, duck-typed): a result or CloudFormatError, nothing else; a result is itself a valid cloud."""
    scan = only_cloud_format_errors(lambda: cloud.decode(msg))
    if scan is not None:
        assert_valid_scan(scan, msg)
    points = only_cloud_format_errors(lambda: cloud.read_points(msg))
    n = 1 if points is None else len(points)  # a wrong-length argument must not matter once the header fails
    rng = np.random.default_rng(seed)
    ids, prob = rng.integers(0, NUM_CLASSES, n).astype(np.uint8), rng.random(n).astype(np.float32)
    keep = rng.random(n) < 0.5
    outputs = [
        only_cloud_format_errors(lambda: cloud.with_labels(msg, ids, prob)),
        only_cloud_format_errors(lambda: cloud.with_labels(msg, ids, label_format="label")),
        only_cloud_format_errors(lambda: cloud.visualization_cloud(msg, ids)),
        only_cloud_format_errors(lambda: cloud.filter_cloud(msg, keep)),
    ]
    if points is None:
        assert all(out is None for out in outputs), "an output from a cloud read_points refuses"
        return
    for out in outputs:
        if out is not None:
            assert len(cloud.read_points(out)) <= n  # the output is a PointCloud2 the decoder accepts
