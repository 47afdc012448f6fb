"""PointCloud2 layouts: the PointField datatypes, and a message's fields, steps and byte order validated and
laid over its data buffer (`read_layout`), without copying and without looping over points.

A message's own ``fields`` (name, offset, datatype, count), ``point_step``, ``row_step`` and
``is_bigendian`` become one numpy structured dtype laid over the message buffer with ``np.frombuffer`` /
strides. Messages are duck-typed: rclpy messages, ``rosbags`` messages and plain dataclasses with
PointCloud2's attributes all work.
"""
from __future__ import annotations

import operator
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"  # the message type name, ROS 2 spelling (bags, typestores)
POINTFIELD_TYPE = "sensor_msgs/msg/PointField"

# sensor_msgs/msg/PointField datatype constants
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)

#: PointField datatype -> little-endian numpy dtype (``.newbyteorder(">")`` for big-endian clouds)
DATATYPE_DTYPES: dict[int, np.dtype] = {
    INT8: np.dtype("<i1"), UINT8: np.dtype("<u1"), INT16: np.dtype("<i2"), UINT16: np.dtype("<u2"),
    INT32: np.dtype("<i4"), UINT32: np.dtype("<u4"), FLOAT32: np.dtype("<f4"), FLOAT64: np.dtype("<f8"),
}
#: PointField datatype -> its constant's name
DATATYPE_NAMES: dict[int, str] = {
    INT8: "INT8", UINT8: "UINT8", INT16: "INT16", UINT16: "UINT16",
    INT32: "INT32", UINT32: "UINT32", FLOAT32: "FLOAT32", FLOAT64: "FLOAT64",
}
DATATYPE_OF_KIND: dict[tuple[str, int], int] = {
    (dt.kind, dt.itemsize): code for code, dt in DATATYPE_DTYPES.items()
}

_NATIVE_BIG = sys.byteorder == "big"
#: largest value of PointCloud2's height, width, point_step, row_step and PointField's offset, count (uint32)
UINT32_MAX = 2**32 - 1
#: largest PointField datatype value (uint8)
UINT8_MAX = 2**8 - 1
#: largest point_step numpy can lay over a buffer: a dtype's size is a C int (numpy "integer won't fit
#: into a C int"); legal uint32 values above it are refused rather than decoded
MAX_POINT_STEP = 2**31 - 1


class CloudFormatError(ValueError):
    """A PointCloud2 whose layout or data cannot be decoded, or an output that cannot be built."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    offset: int
    datatype: int
    count: int

    @property
    def itemsize(self) -> int:
        return DATATYPE_DTYPES[self.datatype].itemsize

    @property
    def size(self) -> int:
        return self.itemsize * self.count

    def dtype(self, is_bigendian: bool) -> np.dtype:
        base = DATATYPE_DTYPES[self.datatype].newbyteorder(">" if is_bigendian else "<")
        return base if self.count == 1 else np.dtype((base, (self.count,)))


@dataclass(frozen=True)
class PointFormat:
    """A validated field list: fields in message order, by name, their structured dtype, and what the
    decoder's fast paths need to know about x, y, z (worked out once per layout)."""

    fields: tuple[FieldSpec, ...]
    by_name: Mapping[str, FieldSpec]
    dtype: np.dtype  # structured, itemsize = point_step, in the message's byte order
    element: Mapping[str, np.dtype]  # each field's scalar (first element) dtype, message byte order
    xyz_native_f32: bool = False  # x, y, z are FLOAT32 in this machine's byte order, 4-byte aligned
    xyz_adjacent: bool = False  # ... and y, z follow x directly: (N, 3) is a strided view


@dataclass(frozen=True)
class CloudLayout:
    """A validated PointCloud2 layout laid over its data buffer."""

    format: PointFormat
    height: int
    width: int
    point_step: int
    row_step: int
    is_bigendian: bool
    buffer: np.ndarray  # (>= row_step * height,) uint8, the message data (no copy)

    @property
    def num_points(self) -> int:
        return self.height * self.width

    def grid(self, dtype: np.dtype | None = None, offset: int = 0) -> np.ndarray:
        """(height, width) zero-copy view of the points as `dtype` (default: the point dtype) at `offset`."""
        dtype = self.format.dtype if dtype is None else dtype
        if self.num_points == 0:
            return np.empty((self.height, self.width), dtype=dtype)
        return np.ndarray(
            (self.height, self.width), dtype=dtype, buffer=self.buffer, offset=offset,
            strides=(self.row_step, self.point_step),
        )

    def flat(self, dtype: np.dtype | None = None, offset: int = 0) -> np.ndarray:
        """(height * width,) points: a view when rows carry no padding, else a compact copy."""
        return self.grid(dtype, offset).reshape(-1)

    def raw_points(self) -> np.ndarray:
        """(height, width) view of each point's point_step bytes as one opaque (void) item."""
        return self.grid(np.dtype(f"V{self.point_step}"))


def _uint(value: Any, what: str, maximum: int = UINT32_MAX) -> int:
    """`value` as a plain int in 0..`maximum` (its ROS type's range), else CloudFormatError naming `what`."""
    try:
        number = operator.index(value)
    except TypeError:
        raise CloudFormatError(f"{what} must be an integer, got {type(value).__name__} {value!r}") from None
    if number < 0:
        raise CloudFormatError(f"{what} must be >= 0, got {number}")
    if number > maximum:
        kind = "uint8" if maximum == UINT8_MAX else "uint32"
        raise CloudFormatError(f"{what} is {number}, beyond the {kind} range of its PointCloud2 field (max {maximum})")
    return number


def _flag(value: Any, what: str) -> bool:
    """A bool field (is_bigendian): True / False, or an integer 0 / 1; anything else is CloudFormatError."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    try:
        number = operator.index(value)
    except TypeError:
        number = -1
    if number not in (0, 1):
        raise CloudFormatError(f"{what} must be a bool, got {type(value).__name__} {value!r}"[:200])
    return bool(number)


def _field_tuples(raw_fields: Any) -> tuple[tuple[str, int, int, int], ...]:
    """(name, offset, datatype, count) per PointField with the types checked: names non-empty str, numbers
    plain ints (`operator.index`: 0.0 or "4" are refused, numpy integers become int)."""
    out = []
    for i, (name, offset, datatype, count) in enumerate(raw_fields):
        if not isinstance(name, str) or not name:
            raise CloudFormatError(f"PointField #{i} has an invalid name {name!r} (need a non-empty string)")
        name = str(name)  # a str subclass (numpy str_) compares equal: key on the plain str
        out.append((name, _uint(offset, f"field '{name}' offset"),
                    _uint(datatype, f"field '{name}' datatype", UINT8_MAX), _uint(count, f"field '{name}' count")))
    return tuple(out)


@lru_cache(maxsize=256)
def _point_format(
    raw_fields: tuple[tuple[Any, Any, Any, Any], ...], point_step: int, is_bigendian: bool
) -> PointFormat:
    """Validate (name, offset, datatype, count) tuples; cached, since clouds of a topic share a layout.

    `raw_fields` must come from `_field_tuples` (str names, plain ints): the cache key compares with ==,
    where 0.0 == 0 and True == 1, so the type checks happen there, before every lookup.
    """
    fields = [FieldSpec(name, offset, datatype, count) for name, offset, datatype, count in raw_fields]
    by_name: dict[str, FieldSpec] = {}
    for f in fields:
        if f.name in by_name:
            raise CloudFormatError(f"duplicate field name '{f.name}'")
        by_name[f.name] = f
        if f.datatype not in DATATYPE_DTYPES:
            raise CloudFormatError(f"field '{f.name}' has unknown datatype {f.datatype} (PointField knows 1..8)")
        if f.count < 1:
            raise CloudFormatError(f"field '{f.name}' has count {f.count} (must be >= 1)")
        if f.offset + f.size > point_step:
            raise CloudFormatError(f"field '{f.name}' ends at byte {f.offset + f.size}, past point_step {point_step}")
    by_offset = sorted(fields, key=lambda f: f.offset)
    for a, b in zip(by_offset, by_offset[1:]):
        if a.offset + a.size > b.offset:
            raise CloudFormatError(
                f"fields '{a.name}' (bytes {a.offset}..{a.offset + a.size - 1}) and '{b.name}' "
                f"(from byte {b.offset}) overlap"
            )
    dtype = np.dtype({
        "names": [f.name for f in fields], "formats": [f.dtype(is_bigendian) for f in fields],
        "offsets": [f.offset for f in fields], "itemsize": point_step,
    })
    element = {f.name: FieldSpec(f.name, f.offset, f.datatype, 1).dtype(is_bigendian) for f in fields}
    xyz = [by_name[name] for name in "xyz" if name in by_name]
    native_f32 = (
        len(xyz) == 3 and is_bigendian == _NATIVE_BIG
        and all(f.datatype == FLOAT32 and f.offset % 4 == 0 for f in xyz)
    )
    adjacent = native_f32 and xyz[1].offset == xyz[0].offset + 4 and xyz[2].offset == xyz[0].offset + 8
    return PointFormat(tuple(fields), by_name, dtype, element, native_f32, adjacent)


def _buffer(data: Any) -> np.ndarray:
    """The message's data as a 1-D uint8 array, without copying when it supports the buffer protocol."""
    if isinstance(data, np.ndarray):
        if data.dtype.itemsize != 1 or data.dtype.kind not in "uib":
            raise CloudFormatError(f"PointCloud2.data must hold bytes, got an ndarray of {data.dtype}")
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            return np.array(data, dtype=np.uint8)
        except (OverflowError, ValueError, TypeError) as err:
            raise CloudFormatError(f"PointCloud2.data must be a sequence of bytes 0..255: {err}") from None
    try:
        view = memoryview(data)
    except TypeError:
        raise CloudFormatError(f"PointCloud2.data of type {type(data).__name__} holds no bytes") from None
    if not view.c_contiguous:
        raise CloudFormatError("PointCloud2.data is a non-contiguous buffer")
    return np.frombuffer(view if view.format == "B" else view.cast("B"), dtype=np.uint8)


def read_layout(msg: Any) -> CloudLayout:
    """Read and validate a PointCloud2's layout; raise CloudFormatError naming the first problem."""
    try:
        height, width, fields = msg.height, msg.width, msg.fields
        point_step, row_step = msg.point_step, msg.row_step
        is_bigendian, data = msg.is_bigendian, msg.data
    except AttributeError as err:
        raise CloudFormatError(f"{type(msg).__name__} is not a PointCloud2: no attribute '{err.name}'") from None
    is_bigendian = _flag(is_bigendian, "is_bigendian")
    height, width = _uint(height, "height"), _uint(width, "width")
    point_step, row_step = _uint(point_step, "point_step"), _uint(row_step, "row_step")
    if point_step > MAX_POINT_STEP:
        raise CloudFormatError(f"point_step {point_step} is larger than the {MAX_POINT_STEP} bytes a point "
                               f"can have here")
    try:
        raw_fields = tuple([(f.name, f.offset, f.datatype, f.count) for f in fields])
    except AttributeError as err:
        raise CloudFormatError(f"a PointField ({type(err.obj).__name__}) has no attribute '{err.name}'") from None
    except TypeError:
        raise CloudFormatError(f"PointCloud2.fields must be a sequence, got {type(fields).__name__}") from None
    point_format = _point_format(_field_tuples(raw_fields), point_step, is_bigendian)
    buffer = _buffer(data)
    if height * width > 0:
        if point_step == 0:
            raise CloudFormatError(f"point_step is 0 for {height}x{width} points")
        if row_step < width * point_step:
            raise CloudFormatError(
                f"row_step {row_step} < width {width} x point_step {point_step} = {width * point_step}"
            )
        if buffer.size < row_step * height:
            raise CloudFormatError(
                f"data holds {buffer.size} bytes, less than row_step {row_step} x height {height} = "
                f"{row_step * height}"
            )
    return CloudLayout(point_format, height, width, point_step, row_step, is_bigendian, buffer)
