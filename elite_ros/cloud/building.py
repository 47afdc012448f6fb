"""numpy -> PointCloud2: new clouds (`make_cloud`) and the segmentation outputs built from an input cloud.

Output clouds (modelled on Autoware's LiDAR segmentation nodes):

- :func:`with_labels`: the input cloud, every input field and byte kept, plus ``class_id`` (UINT8) and
  ``probability`` (FLOAT32), or ``label`` (UINT32 raw SemanticKITTI id, PCL ``PointXYZL``).
- :func:`visualization_cloud`: compact x, y, z + ``rgb`` (FLOAT32 holding 0x00RRGGBB, PCL convention).
- :func:`filter_cloud`: the input cloud with some points removed, in its own layout.

Outputs are built from the input's own classes (``type(msg)``, ``type(msg.fields[0])``) with keyword
arguments, keep the input's byte order, and keep the type of its ``data`` container (``array.array('B')``
for rclpy, uint8 ndarray for rosbags, ``bytes``, ``bytearray``). Padding bytes the builders add are zero,
so equal inputs give byte-identical outputs.
"""
from __future__ import annotations

import array
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from elite_ros.cloud.decoding import decode
from elite_ros.cloud.layout import (
    DATATYPE_OF_KIND,
    FLOAT32,
    MAX_POINT_STEP,
    POINTCLOUD2_TYPE,
    POINTFIELD_TYPE,
    UINT8,
    UINT32,
    UINT32_MAX,
    CloudFormatError,
    FieldSpec,
    read_layout,
)
from elite_ros.labels import SEMANTIC_KITTI, ClassTable, packed_rgb, palette_rgb

CLASS_ID_FIELD = "class_id"  # UINT8 training id (Autoware lidar segmentation output)
PROBABILITY_FIELD = "probability"  # FLOAT32 softmax of the chosen class (Autoware)
LABEL_FIELD = "label"  # UINT32 raw id (SemanticKITTI's by default; PCL PointXYZL / .label convention)
RGB_FIELD = "rgb"  # FLOAT32 holding 0x00RRGGBB (PCL PointXYZRGB convention)
LABEL_FORMATS = ("class_id", "label")

_UNSIGNED_OF_SIZE: dict[int, np.dtype] = {1: np.dtype("u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


class _OutputData:
    """A writable uint8 buffer that becomes a `data` container of the same type as `like`.

    array.array, bytearray, bytes and list stay themselves; anything else (numpy, None) becomes a uint8
    ndarray. array.array and bytearray buffers start zero-filled (`zero_filled`); the others start
    uninitialised, so the builders zero their padding bytes themselves.
    """

    def __init__(self, nbytes: int, like: Any):
        kind: type = type(like)
        self._kind = kind if kind in (array.array, bytearray, bytes, list) else np.ndarray
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
        self, columns: Sequence[tuple[FieldSpec, np.ndarray]], n: int, step: int, is_bigendian: bool, start: int = 0,
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
            dtype: np.dtype = spec.dtype(is_bigendian)
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
    return store.types[POINTCLOUD2_TYPE], store.types[POINTFIELD_TYPE]


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
    if point_step > MAX_POINT_STEP or width * point_step > UINT32_MAX:
        raise CloudFormatError(f"the output cloud would have point_step {point_step} and row_step "
                               f"{width * point_step}: beyond what a PointCloud2 can hold (point_step <= "
                               f"{MAX_POINT_STEP}, row_step <= {UINT32_MAX})")
    cloud_cls = type(like) if like is not None else _default_classes()[0]
    return _new_message(
        cloud_cls, data, header=header, height=int(height), width=int(width), fields=list(fields),
        is_bigendian=bool(is_bigendian), point_step=int(point_step), row_step=int(width * point_step),
        is_dense=bool(is_dense),
    )


def _field_objects(like: Any, specs: Sequence[FieldSpec]) -> list[Any]:
    field_cls = _field_class(like) if like is not None else _default_classes()[1]
    return [field_cls(name=s.name, offset=int(s.offset), datatype=int(s.datatype), count=int(s.count)) for s in specs]


def _pack(specs: Sequence[FieldSpec], start: int, alignment: int) -> tuple[list[FieldSpec], int]:
    """Place `specs` from byte `start` on, each at its natural alignment; return them and the point_step.

    point_step is rounded up to the largest element size (C struct rule) so every point stays aligned.
    """
    placed, cursor = [], start
    for s in specs:
        offset = _align(cursor, s.itemsize)
        placed.append(FieldSpec(s.name, offset, s.datatype, s.count))
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
    specs: list[FieldSpec] = []
    n: int | None = None
    for name, values in fields.items():
        if not isinstance(name, str) or not name:
            raise CloudFormatError(f"field name {name!r} must be a non-empty string")
        arr = np.asarray(values)
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] < 1):
            raise CloudFormatError(f"field '{name}' must have shape (N,) or (N, count), got {arr.shape}")
        datatype = DATATYPE_OF_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
        if datatype is None:
            raise CloudFormatError(f"field '{name}' has dtype {arr.dtype}, which no PointField datatype holds")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise CloudFormatError(f"field '{name}' has {arr.shape[0]} points, the first field has {n}")
        specs.append(FieldSpec(name, 0, datatype, 1 if arr.ndim == 1 else arr.shape[1]))
        columns.append(arr)
    n = int(n or 0)
    placed, point_step = _pack(specs, 0, 1)
    out = _OutputData(n * point_step, getattr(like, "data", None))
    out.write_fields(list(zip(placed, columns)), n, point_step, is_bigendian)
    dense = all(bool(np.isfinite(arr).all()) for spec, arr in zip(placed, columns) if spec.name in ("x", "y", "z"))
    return _build(like, header, _field_objects(like, placed), point_step, 1, n, is_bigendian, dense, out.finish())


def with_labels(
    msg: Any, class_id: np.ndarray, probability: np.ndarray | None = None, *,
    label_format: str = "class_id", overwrite: bool = False, classes: ClassTable | None = None,
) -> Any:
    """The input cloud with a label (and probability) added to every point.

    class_id: (num_points,) training ids per message point (0 = unlabelled). probability: (num_points,)
    float or None (then no probability field is written). label_format "class_id" adds ``class_id``
    UINT8 (ids 0..255); "label" adds ``label`` UINT32 = the raw id of each training id through the model's
    learning-map inverse (`classes.to_raw_ids`; default `labels.SEMANTIC_KITTI`: raw SemanticKITTI ids for
    ids 0..19). ``probability`` FLOAT32 follows when given.

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
    layout = read_layout(msg)
    n = layout.num_points
    if label_format == "class_id":
        columns = {CLASS_ID_FIELD: (UINT8, _class_ids(class_id, n, 256))}
    elif label_format == "label":
        table = classes or SEMANTIC_KITTI
        columns = {LABEL_FIELD: (UINT32, table.to_raw_ids(_class_ids(class_id, n, table.num_classes)))}
    else:
        raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")
    if probability is not None:
        prob = _per_point(probability, n, "probability")
        if prob.dtype.kind not in "fiu":
            raise CloudFormatError(f"probability must hold numbers, got {prob.dtype}")
        columns[PROBABILITY_FIELD] = (FLOAT32, prob)

    kept_specs = list(layout.format.fields)
    kept_objects = list(msg.fields)
    in_place: list[FieldSpec] = []
    appended: list[FieldSpec] = []
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
        appended.append(FieldSpec(name, 0, datatype, 1))
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
    layout = read_layout(msg)
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
