"""sensor_msgs/PointCloud2 <-> numpy for any field layout, and the segmentation output clouds.

Decoding never loops over points: the message's own ``fields`` (name, offset, datatype, count),
``point_step``, ``row_step`` and ``is_bigendian`` become one numpy structured dtype laid over the
message buffer with ``np.frombuffer`` / strides, so reading is zero-copy wherever the layout allows. In the
common case (native-endian float32 x, y, z side by side) ``Scan.xyz`` is a strided view of the message.

Output clouds follow DESIGN.md (modelled on Autoware's LiDAR segmentation nodes):

- :func:`with_labels`: the input cloud, every input field and byte kept, plus ``class_id`` (UINT8) and
  ``probability`` (FLOAT32), or ``label`` (UINT32 raw SemanticKITTI id, PCL ``PointXYZL``).
- :func:`visualization_cloud`: compact x, y, z + ``rgb`` (FLOAT32 holding 0x00RRGGBB, PCL convention).
- :func:`filter_cloud`: the input cloud with some points removed, in its own layout.

Messages are duck-typed: rclpy messages, ``rosbags`` messages and plain dataclasses with PointCloud2's
attributes all work. Outputs are built from the input's own classes (``type(msg)``,
``type(msg.fields[0])``) with keyword arguments, keep the input's byte order, and keep the type of its
``data`` container (``array.array('B')`` for rclpy, uint8 ndarray for rosbags, ``bytes``, ``bytearray``).
Padding bytes the builders add are zero, so equal inputs give byte-identical outputs.
"""
from __future__ import annotations

import array
import operator
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from elite_ros.labels import NUM_CLASSES, packed_rgb, palette_rgb, to_raw_ids

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
_DATATYPE_OF_KIND: dict[tuple[str, int], int] = {
    (dt.kind, dt.itemsize): code for code, dt in DATATYPE_DTYPES.items()
}

#: intensity field names tried in order by :func:`decode` (Velodyne/Ouster/Luminar, Ouster, PCL XYZI)
DEFAULT_INTENSITY_FIELDS: tuple[str, ...] = ("intensity", "reflectivity", "i")
CLASS_ID_FIELD = "class_id"  # UINT8 training id (Autoware lidar segmentation output)
PROBABILITY_FIELD = "probability"  # FLOAT32 softmax of the chosen class (Autoware)
LABEL_FIELD = "label"  # UINT32 raw SemanticKITTI id (PCL PointXYZL / .label convention)
RGB_FIELD = "rgb"  # FLOAT32 holding 0x00RRGGBB (PCL PointXYZRGB convention)
LABEL_FORMATS = ("class_id", "label")

_NATIVE_BIG = sys.byteorder == "big"
_UNSIGNED_OF_SIZE = {1: np.dtype("u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}


class CloudFormatError(ValueError):
    """A PointCloud2 whose layout or data cannot be decoded, or an output that cannot be built."""


@dataclass(frozen=True)
class Scan:
    """The finite points of one PointCloud2.

    xyz: (N, 3) float32, metres, finite points only, in message order.
    intensity: (N,) float32 raw values of the intensity field (no scaling), or None when the cloud has none.
    index: (N,) int64 position of each returned point in the message (row-major over height * width).
    num_points: height * width of the message (N <= num_points; the others had NaN / inf coordinates).

    The arrays are read-only and may share memory with the message buffer: copy before modifying.
    """

    xyz: np.ndarray
    intensity: np.ndarray | None
    index: np.ndarray
    num_points: int

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def contiguous(self) -> Scan:
        """A copy with C-contiguous, writable arrays (for torch.from_numpy or in-place work).

        One strided pass per xyz column: about 3x faster than ``np.ascontiguousarray`` on the (N, 3) view.
        """
        xyz = np.empty(self.xyz.shape, dtype=np.float32)
        for axis in range(3):
            xyz[:, axis] = self.xyz[:, axis]
        intensity = None if self.intensity is None else np.array(self.intensity, dtype=np.float32)
        index = np.array(self.index, dtype=np.int64)
        return Scan(xyz=xyz, intensity=intensity, index=index, num_points=self.num_points)


def scan_from_arrays(xyz: np.ndarray, intensity: np.ndarray | None = None) -> Scan:
    """A Scan of a plain (N, 3) array (e.g. a KITTI .bin), every row a message point; non-finite rows are
    kept (the segmenter drops them from the network input and labels them 0)."""
    xyz = np.asarray(xyz, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3), got {xyz.shape}")
    return Scan(xyz=xyz, intensity=None if intensity is None else np.asarray(intensity, np.float32),
                index=np.arange(xyz.shape[0], dtype=np.int64), num_points=int(xyz.shape[0]))


@dataclass(frozen=True)
class _Field:
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
class _PointFormat:
    """A validated field list: fields in message order, by name, their structured dtype, and what the
    decoder's fast paths need to know about x, y, z (worked out once per layout)."""

    fields: tuple[_Field, ...]
    by_name: Mapping[str, _Field]
    dtype: np.dtype  # structured, itemsize = point_step, in the message's byte order
    element: Mapping[str, np.dtype]  # each field's scalar (first element) dtype, message byte order
    xyz_native_f32: bool = False  # x, y, z are FLOAT32 in this machine's byte order, 4-byte aligned
    xyz_adjacent: bool = False  # ... and y, z follow x directly: (N, 3) is a strided view


@dataclass(frozen=True)
class _Layout:
    """A validated PointCloud2 layout laid over its data buffer."""

    format: _PointFormat
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


# ---------------------------------------------------------------------------------------------------
# layout parsing and validation


def _uint(value: Any, what: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise CloudFormatError(f"{what} must be an integer, got {type(value).__name__} {value!r}") from None
    if number < 0:
        raise CloudFormatError(f"{what} must be >= 0, got {number}")
    return number


def _field_tuples(raw_fields: Any) -> tuple[tuple[str, int, int, int], ...]:
    """(name, offset, datatype, count) per PointField with the types checked: names non-empty str, numbers
    plain ints (`operator.index`: 0.0 or "4" are refused, numpy integers become int)."""
    out = []
    for i, (name, offset, datatype, count) in enumerate(raw_fields):
        if not isinstance(name, str) or not name:
            raise CloudFormatError(f"PointField #{i} has an invalid name {name!r} (need a non-empty string)")
        name = str(name)  # a str subclass (numpy str_) compares equal: key on the plain str
        out.append((name, _uint(offset, f"field '{name}' offset"), _uint(datatype, f"field '{name}' datatype"),
                    _uint(count, f"field '{name}' count")))
    return tuple(out)


@lru_cache(maxsize=256)
def _point_format(
    raw_fields: tuple[tuple[Any, Any, Any, Any], ...], point_step: int, is_bigendian: bool
) -> _PointFormat:
    """Validate (name, offset, datatype, count) tuples; cached, since clouds of a topic share a layout.

    `raw_fields` must come from `_field_tuples` (str names, plain ints): the cache key compares with ==,
    where 0.0 == 0 and True == 1, so the type checks happen there, before every lookup.
    """
    fields = [_Field(name, offset, datatype, count) for name, offset, datatype, count in raw_fields]
    by_name: dict[str, _Field] = {}
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
    element = {f.name: _Field(f.name, f.offset, f.datatype, 1).dtype(is_bigendian) for f in fields}
    xyz = [by_name.get(name) for name in "xyz"]
    native_f32 = (
        None not in xyz and is_bigendian == _NATIVE_BIG
        and all(f.datatype == FLOAT32 and f.offset % 4 == 0 for f in xyz)
    )
    adjacent = native_f32 and xyz[1].offset == xyz[0].offset + 4 and xyz[2].offset == xyz[0].offset + 8
    return _PointFormat(tuple(fields), by_name, dtype, element, native_f32, adjacent)


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


def _layout(msg: Any) -> _Layout:
    """Read and validate a PointCloud2's layout; raise CloudFormatError naming the first problem."""
    try:
        height, width, fields = msg.height, msg.width, msg.fields
        point_step, row_step = msg.point_step, msg.row_step
        is_bigendian, data = bool(msg.is_bigendian), msg.data
    except AttributeError as err:
        raise CloudFormatError(f"{type(msg).__name__} is not a PointCloud2: no attribute '{err.name}'") from None
    height, width = _uint(height, "height"), _uint(width, "width")
    point_step, row_step = _uint(point_step, "point_step"), _uint(row_step, "row_step")
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
    return _Layout(point_format, height, width, point_step, row_step, is_bigendian, buffer)


# ---------------------------------------------------------------------------------------------------
# decoding


class _ConstantCache:
    """Read-only prefixes of one growing array (e.g. 0..n-1), so dense clouds allocate no index."""

    def __init__(self, make: Any):
        self._make = make
        self._values = make(0)

    def __call__(self, n: int) -> np.ndarray:
        values = self._values
        if values.size < n:
            values = self._make(max(n, 2 * values.size))
            values.flags.writeable = False
            self._values = values
        return values[:n]


_arange = _ConstantCache(lambda n: np.arange(n, dtype=np.int64))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _column(layout: _Layout, f: _Field, dtype: np.dtype) -> np.ndarray:
    """(N,) values of field `f` (its first element when count > 1) as `dtype`; a view when possible."""
    values = layout.flat(layout.format.element[f.name], f.offset)
    if values.dtype == dtype:
        return values
    with np.errstate(over="ignore", invalid="ignore"):  # FLOAT64 beyond float32 range -> inf, then dropped
        return values.astype(dtype)


def _xyz(layout: _Layout, fx: _Field, fy: _Field, fz: _Field) -> np.ndarray:
    """(N, 3) float32 x, y, z: a strided view of the buffer when they are adjacent native float32."""
    n = layout.num_points
    if layout.format.xyz_adjacent and n > 0:
        grid = np.ndarray(
            (layout.height, layout.width, 3), dtype=np.float32, buffer=layout.buffer, offset=fx.offset,
            strides=(layout.row_step, layout.point_step, 4),
        )
        return grid.reshape(n, 3)  # a view unless rows carry padding
    xyz = np.empty((n, 3), dtype=np.float32)
    for axis, f in enumerate((fx, fy, fz)):
        xyz[:, axis] = _column(layout, f, np.dtype(np.float32))
    return xyz


def _fast_all_finite(layout: _Layout, xyz: np.ndarray) -> bool:
    """True only if every x, y, z is finite; False means "not known", never a wrong True.

    Cheapest first: when x, y, z are native float32 on a 4-byte grid of an aligned buffer (rclpy and
    rosbag2 messages; ROS 1 bags read by rosbags are not aligned), min and max of the whole buffer
    read as float32 (two SIMD passes over contiguous memory) are finite only if every value is, xyz
    included; other fields whose bits read as NaN or inf make this inconclusive, not wrong. Otherwise
    x + y + z is finite exactly when all three are, unless it overflows (then inconclusive too).
    """
    n = layout.num_points
    grid_4 = layout.point_step % 4 == 0 and (layout.height == 1 or layout.row_step % 4 == 0)
    if layout.format.xyz_native_f32 and grid_4:
        size = (layout.height - 1) * layout.row_step + layout.width * layout.point_step
        words = np.ndarray((size // 4,), dtype=np.float32, buffer=layout.buffer)
        if words.flags.aligned:  # numpy's min/max are SIMD only on aligned float32
            with np.errstate(invalid="ignore"):
                low, high = np.minimum.reduce(words), np.maximum.reduce(words)
            if -np.inf < low and high < np.inf:  # False for NaN too
                return True
    total = np.empty(n, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        np.add(xyz[:, 0], xyz[:, 1], out=total)
        np.add(total, xyz[:, 2], out=total)
        return bool(np.isfinite(np.add.reduce(total)))


def decode(msg: Any, intensity_field: str | Sequence[str] | None = DEFAULT_INTENSITY_FIELDS) -> Scan:
    """PointCloud2 -> :class:`Scan` of its finite points.

    `intensity_field`: a field name or candidate names, the first present wins; None or () skips it.
    x, y, z of any datatype become float32 metres (FLOAT64 values beyond float32 range become inf and are
    dropped); a field with count > 1 contributes its first element. Raises CloudFormatError when the
    message is malformed or has no x, y or z field.
    """
    layout = _layout(msg)
    by_name = layout.format.by_name
    for name in ("x", "y", "z"):
        if name not in by_name:
            present = ", ".join(by_name) or "none"
            raise CloudFormatError(f"PointCloud2 has no '{name}' field (fields: {present})")
    if intensity_field is None or isinstance(intensity_field, str):
        candidates = () if intensity_field is None else (intensity_field,)
    else:
        candidates = tuple(intensity_field)
    f_intensity = next((by_name[c] for c in candidates if c in by_name), None)

    n = layout.num_points
    fx, fy, fz = by_name["x"], by_name["y"], by_name["z"]
    xyz = _xyz(layout, fx, fy, fz)
    intensity = None if f_intensity is None else _column(layout, f_intensity, np.dtype(np.float32))
    if n == 0 or _fast_all_finite(layout, xyz):
        index = _arange(n)
    else:
        index = np.flatnonzero(np.isfinite(xyz).all(axis=1))
        xyz = xyz[index]
        intensity = None if intensity is None else intensity[index]
    return Scan(
        xyz=_readonly(xyz), intensity=None if intensity is None else _readonly(intensity),
        index=_readonly(index), num_points=n,
    )


def read_points(msg: Any) -> np.ndarray:
    """(height * width,) structured array with the message's own fields, offsets and byte order.

    Zero-copy (read-only when the message buffer is) unless rows carry row_step padding.
    """
    return _layout(msg).flat()


# ---------------------------------------------------------------------------------------------------
# building messages


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


class _OutputData:
    """A writable uint8 buffer that becomes a `data` container of the same type as `like`.

    array.array, bytearray, bytes and list stay themselves; anything else (numpy, None) becomes a uint8
    ndarray. array.array and bytearray buffers start zero-filled (`zero_filled`); the others start
    uninitialised, so the builders zero their padding bytes themselves.
    """

    def __init__(self, nbytes: int, like: Any):
        self._kind = type(like) if type(like) in (array.array, bytearray, bytes, list) else np.ndarray
        self.zero_filled = self._kind in (array.array, bytearray)
        if self._kind is array.array:
            self._container: Any = array.array("B", [0]) * nbytes  # repetition fills at memcpy speed
        elif self._kind is bytearray:
            self._container = bytearray(nbytes)
        else:
            self._container = np.empty(nbytes, dtype=np.uint8)
        self.bytes = np.frombuffer(self._container, dtype=np.uint8) if nbytes else np.zeros(0, np.uint8)

    def points(self, dtype: np.dtype, count: int, offset: int = 0, step: int | None = None) -> np.ndarray:
        """(count,) writable array of `dtype` starting at byte `offset`, `step` bytes apart."""
        if count == 0:
            return np.empty(0, dtype=dtype)
        return np.ndarray((count,), dtype=dtype, buffer=self.bytes, offset=offset,
                          strides=None if step is None else (step,))

    def write_fields(
        self, columns: Sequence[tuple[_Field, np.ndarray]], n: int, step: int, is_bigendian: bool, start: int = 0,
    ) -> None:
        """Write each (field, (n,) or (n, count) values) into every point; zero the gaps in [start, step).

        One strided pass per field. A UINT8 field followed by 1, 3 or 7 padding bytes is written as one
        little-endian 2-, 4- or 8-byte unsigned integer, which puts the value in its byte and zeroes the
        padding in the same pass.
        """
        placed = sorted(columns, key=lambda c: c[0].offset)
        cursor, gaps = start, []
        for i, (spec, values) in enumerate(placed):
            if spec.offset > cursor:
                gaps.append((cursor, spec.offset - cursor))
            end = spec.offset + spec.size
            following = placed[i + 1][0].offset if i + 1 < len(placed) else step
            dtype = spec.dtype(is_bigendian)
            slot = following - spec.offset
            if not self.zero_filled and spec.datatype == UINT8 and spec.count == 1 and slot in (2, 4, 8):
                dtype, end = _UNSIGNED_OF_SIZE[slot], following
            with np.errstate(over="ignore", invalid="ignore"):
                self.points(dtype, n, spec.offset, step)[...] = values
            cursor = end
        if cursor < step:
            gaps.append((cursor, step - cursor))
        if self.zero_filled:
            return
        for offset, length in gaps:
            while length:
                piece = max(size for size in (8, 4, 2, 1) if size <= length)
                self.points(_UNSIGNED_OF_SIZE[piece], n, offset, step)[...] = 0
                offset, length = offset + piece, length - piece

    def finish(self) -> Any:
        self.bytes = np.zeros(0, np.uint8)  # release the buffer export so an array.array stays resizable
        if self._kind is bytes:
            return self._container.tobytes()
        if self._kind is list:
            return self._container.tolist()
        return self._container


@lru_cache(maxsize=1)
def _default_classes() -> tuple[type, type]:
    """(PointCloud2, PointField) of the rosbags ROS 2 Kilted typestore."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    return store.types["sensor_msgs/msg/PointCloud2"], store.types["sensor_msgs/msg/PointField"]


def _field_class(like: Any) -> type:
    """The PointField class that goes with message `like`: its first field's, else its module's."""
    fields = list(getattr(like, "fields", None) or [])
    if fields:
        return type(fields[0])
    module_name = type(like).__module__  # e.g. sensor_msgs.msg._point_cloud2, rosbags.typesys.stores.x
    for candidate in (module_name, module_name.rpartition(".")[0]):
        module = sys.modules.get(candidate) if candidate else None
        for name in ("PointField", "sensor_msgs__msg__PointField"):  # rosidl package / rosbags store
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                return cls
    return _default_classes()[1]


def _new_message(cls: type, data: Any, **kwargs: Any) -> Any:
    """cls(**kwargs, data=data), without copying `data` where the message class allows it."""
    if hasattr(cls, "_fields_and_field_types"):  # rosidl-generated (rclpy) message
        # Its constructor copies `data`, and so does the unchecked setter; with field checks on, the
        # setter keeps an array.array('B') as given (and checks every other attribute's type).
        checked = {"check_fields": True} if "_check_fields" in getattr(cls, "__slots__", ()) else {}
        msg = cls(**kwargs, **checked)
        msg.data = data
        return msg
    return cls(**kwargs, data=data)


def _build(
    like: Any, header: Any, fields: Sequence[Any], point_step: int, height: int, width: int,
    is_bigendian: bool, is_dense: bool, data: Any,
) -> Any:
    cloud_cls = type(like) if like is not None else _default_classes()[0]
    return _new_message(
        cloud_cls, data, header=header, height=int(height), width=int(width), fields=list(fields),
        is_bigendian=bool(is_bigendian), point_step=int(point_step), row_step=int(width * point_step),
        is_dense=bool(is_dense),
    )


def _field_objects(like: Any, specs: Sequence[_Field]) -> list[Any]:
    field_cls = _field_class(like) if like is not None else _default_classes()[1]
    return [field_cls(name=s.name, offset=int(s.offset), datatype=int(s.datatype), count=int(s.count)) for s in specs]


def _pack(specs: Sequence[_Field], start: int, alignment: int) -> tuple[list[_Field], int]:
    """Place `specs` from byte `start` on, each at its natural alignment; return them and the point_step.

    point_step is rounded up to the largest element size (C struct rule) so every point stays aligned.
    """
    placed, cursor = [], start
    for s in specs:
        offset = _align(cursor, s.itemsize)
        placed.append(_Field(s.name, offset, s.datatype, s.count))
        cursor = offset + s.size
        alignment = max(alignment, s.itemsize)
    return placed, _align(cursor, alignment)


def _per_point(values: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise CloudFormatError(f"{what} must have shape ({n},) (one value per message point), got {arr.shape}")
    return arr


def _class_ids(class_id: Any, n: int, limit: int, what: str = "class_id") -> np.ndarray:
    ids = _per_point(class_id, n, what)
    if ids.dtype.kind not in "iu":
        raise CloudFormatError(f"{what} must hold integers, got {ids.dtype}")
    if ids.dtype == np.uint8 and limit >= 256:
        return ids
    if ids.size and (ids.min() < 0 or ids.max() >= limit):
        raise CloudFormatError(f"{what} values must lie in 0..{limit - 1}, got {ids.min()}..{ids.max()}")
    return ids


def make_cloud(
    fields: Mapping[str, np.ndarray], header: Any, *, like: Any = None, is_bigendian: bool = False
) -> Any:
    """Build a 1 x N PointCloud2 from per-point arrays `fields` (name -> (N,) or (N, count)).

    Field order is kept; each field sits at its natural alignment and point_step is rounded up to the
    largest element size (like a C struct; padding bytes are zero). Datatypes follow the arrays' dtypes
    (int8..float64; any other raises CloudFormatError). `like`: a message whose classes and `data`
    container type are used (default: the rosbags ROS 2 Kilted typestore classes, numpy data). Values
    are written big-endian when `is_bigendian`. is_dense is true when x, y, z (if present) are all finite.
    """
    if not fields:
        raise CloudFormatError("make_cloud needs at least one field")
    columns: list[np.ndarray] = []
    specs: list[_Field] = []
    n: int | None = None
    for name, values in fields.items():
        if not isinstance(name, str) or not name:
            raise CloudFormatError(f"field name {name!r} must be a non-empty string")
        arr = np.asarray(values)
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] < 1):
            raise CloudFormatError(f"field '{name}' must have shape (N,) or (N, count), got {arr.shape}")
        datatype = _DATATYPE_OF_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
        if datatype is None:
            raise CloudFormatError(f"field '{name}' has dtype {arr.dtype}, which no PointField datatype holds")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise CloudFormatError(f"field '{name}' has {arr.shape[0]} points, the first field has {n}")
        specs.append(_Field(name, 0, datatype, 1 if arr.ndim == 1 else arr.shape[1]))
        columns.append(arr)
    n = int(n or 0)
    placed, point_step = _pack(specs, 0, 1)
    out = _OutputData(n * point_step, getattr(like, "data", None))
    out.write_fields(list(zip(placed, columns)), n, point_step, is_bigendian)
    dense = all(bool(np.isfinite(arr).all()) for spec, arr in zip(placed, columns) if spec.name in ("x", "y", "z"))
    return _build(like, header, _field_objects(like, placed), point_step, 1, n, is_bigendian, dense, out.finish())


def with_labels(
    msg: Any, class_id: np.ndarray, probability: np.ndarray | None = None, *,
    label_format: str = "class_id", overwrite: bool = False,
) -> Any:
    """The input cloud with a label (and probability) added to every point.

    class_id: (num_points,) training ids per message point (0 = unlabelled). probability: (num_points,)
    float or None (then no probability field is written). label_format "class_id" adds ``class_id``
    UINT8 (ids 0..255); "label" adds ``label`` UINT32 = raw SemanticKITTI id (`labels.to_raw_ids`, ids
    0..19). ``probability`` FLOAT32 follows when given.

    The result is a new message of the input's class: same header (the same object), height, width,
    fields (the same PointField objects), byte order and every input byte of each point (padding
    included), followed by the new fields, widest first, each at its natural alignment, with point_step
    rounded up to the largest element size (zero padding; e.g. Luminar's 32-byte points become 40:
    probability at 32, class_id at 36). Row padding (row_step beyond width * point_step) is not
    carried over: the output rows are packed. An output field name the input already has raises
    CloudFormatError unless `overwrite`: then an existing field of the same datatype and count 1 is
    rewritten in place, any other is dropped from `fields` (its bytes stay, as padding) and the new
    field is appended.
    """
    layout = _layout(msg)
    n = layout.num_points
    if label_format == "class_id":
        columns = {CLASS_ID_FIELD: (UINT8, _class_ids(class_id, n, 256))}
    elif label_format == "label":
        columns = {LABEL_FIELD: (UINT32, to_raw_ids(_class_ids(class_id, n, NUM_CLASSES)))}
    else:
        raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")
    if probability is not None:
        prob = _per_point(probability, n, "probability")
        if prob.dtype.kind not in "fiu":
            raise CloudFormatError(f"probability must hold numbers, got {prob.dtype}")
        columns[PROBABILITY_FIELD] = (FLOAT32, prob)

    kept_specs = list(layout.format.fields)
    kept_objects = list(msg.fields)
    in_place: list[_Field] = []
    appended: list[_Field] = []
    for name, (datatype, _) in columns.items():
        existing = layout.format.by_name.get(name)
        if existing is not None:
            if not overwrite:
                raise CloudFormatError(
                    f"input cloud already has a field named '{name}' (pass overwrite=True to replace it)"
                )
            if existing.datatype == datatype and existing.count == 1:
                in_place.append(existing)
                continue
            i = kept_specs.index(existing)
            del kept_specs[i], kept_objects[i]
        appended.append(_Field(name, 0, datatype, 1))
    appended.sort(key=lambda s: -s.itemsize)  # widest first (stable): least padding
    if appended:
        appended, point_step = _pack(appended, layout.point_step, max([1] + [f.itemsize for f in kept_specs]))
    else:
        point_step = layout.point_step

    out = _OutputData(n * point_step, msg.data)
    if n:
        raw = out.points(np.dtype(f"V{layout.point_step}"), n, 0, point_step)
        raw.reshape(layout.height, layout.width)[...] = layout.raw_points()
    for spec in in_place:  # inside the copied input bytes: nothing to pad
        out.points(spec.dtype(layout.is_bigendian), n, spec.offset, point_step)[...] = columns[spec.name][1]
    out.write_fields(
        [(spec, columns[spec.name][1]) for spec in appended], n, point_step, layout.is_bigendian,
        start=layout.point_step,
    )
    fields = kept_objects + _field_objects(msg, appended)
    return _build(
        msg, msg.header, fields, point_step, layout.height, layout.width, layout.is_bigendian,
        bool(getattr(msg, "is_dense", False)), out.finish(),
    )


def visualization_cloud(msg: Any, class_id: np.ndarray, palette: np.ndarray | None = None) -> Any:
    """Compact 1 x M cloud for RViz: x, y, z FLOAT32 + ``rgb`` FLOAT32 (0x00RRGGBB bits), finite points.

    class_id: (num_points,) training ids per message point; palette: (K, 3) uint8 RGB per id (default:
    `labels.palette_rgb()`). Same header, message class and byte order as the input.
    """
    pal = palette_rgb() if palette is None else np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise ValueError(f"palette must have shape (K, 3) RGB, got {pal.shape}")
    scan = decode(msg, intensity_field=None)
    ids = _class_ids(class_id, scan.num_points, pal.shape[0])
    colours = packed_rgb(ids[scan.index], pal).astype(np.uint32).view(np.float32)
    return make_cloud(
        {"x": scan.xyz[:, 0], "y": scan.xyz[:, 1], "z": scan.xyz[:, 2], RGB_FIELD: colours},
        msg.header, like=msg, is_bigendian=bool(msg.is_bigendian),
    )


def filter_cloud(msg: Any, keep: np.ndarray) -> Any:
    """The input cloud with only the points where `keep` ((num_points,) bool) is true.

    Same fields (the same objects), point_step, byte order and bytes per point; the result is 1 x kept
    (an organised cloud loses its rows and their padding).
    """
    layout = _layout(msg)
    mask = _per_point(keep, layout.num_points, "keep")
    if mask.dtype != np.bool_:
        raise CloudFormatError(f"keep must be a boolean mask, got {mask.dtype}")
    count = int(np.count_nonzero(mask))
    out = _OutputData(count * layout.point_step, msg.data)
    if count:
        raw = np.dtype(f"V{layout.point_step}")
        np.compress(mask, layout.raw_points().reshape(-1), out=out.points(raw, count))
    return _build(
        msg, msg.header, list(msg.fields), layout.point_step, 1, count, layout.is_bigendian,
        bool(getattr(msg, "is_dense", False)), out.finish(),
    )
