"""Messages of any typestore (ROS 1 rosbags, rclpy, other ROS 2 definitions) -> ROS 2 Kilted classes, field by field.

ROS 1's ``Header.seq`` is dropped, ROS 1 ``time`` becomes ``builtin_interfaces/msg/Time``, ``CameraInfo``'s
``D/K/R/P`` become ``d/k/r/p``; numeric arrays of the right dtype are shared, not copied.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys.base import normalize_fieldname
from rosbags.typesys.store import Typestore

from elite_ros.bag.formats import TYPESTORE, BagError


def message_type(msg: object) -> str:
    """ROS 2 type name of a message object: rosbags (``__msgtype__``) or rclpy (module path) classes.

    Raises:
        BagError: the type cannot be told from the object.
    """
    name = getattr(msg, "__msgtype__", None)
    if isinstance(name, str):
        return name
    cls = type(msg)
    parts = cls.__module__.split(".")
    if len(parts) >= 2 and parts[1] in ("msg", "srv", "action"):  # rclpy: sensor_msgs.msg._point_cloud2
        return f"{parts[0]}/{parts[1]}/{cls.__name__}"
    raise BagError(f"cannot tell the ROS message type of a {cls.__module__}.{cls.__qualname__}; pass msgtype")


def _numpy_dtype(basename: str) -> np.dtype:
    # rosbags' own numpy mapping for base-type arrays (serde.utils.ndtype): bool -> bool_, char -> uint8
    return np.dtype({"bool": np.bool_, "char": np.uint8, "byte": np.byte}.get(basename, basename))


def _source_fields(msg: object) -> dict[str, str]:
    """Lower-cased field name -> attribute name of a message object of any kind."""
    if dataclasses.is_dataclass(msg):
        names = [field.name for field in dataclasses.fields(msg)]
    elif hasattr(msg, "get_fields_and_field_types"):  # rclpy
        names = list(msg.get_fields_and_field_types())
    else:
        names = [name for name in vars(msg) if not name.startswith("_")]
    return {name.lower(): name for name in names}


def _default_value(desc: tuple, store: Typestore) -> Any:
    node, spec = desc
    if node == Nodetype.BASE:
        basename = spec[0]
        if basename == "string":
            return ""
        if basename == "bool":
            return False
        return 0.0 if basename.startswith("float") else 0
    if node == Nodetype.NAME:
        return convert_message(None, spec, store)
    subdesc, length = spec
    if node == Nodetype.SEQUENCE:
        length = 0
    if subdesc[0] == Nodetype.BASE and subdesc[1][0] != "string":
        return np.zeros(length, dtype=_numpy_dtype(subdesc[1][0]))
    return [_default_value(subdesc, store) for _ in range(length)]


def _convert_base(value: Any, basename: str) -> Any:
    if basename == "string":
        return value if isinstance(value, str) else str(value)
    if basename == "bool":
        return bool(value)
    if basename.startswith("float"):
        return float(value)
    if isinstance(value, (bytes, bytearray)):  # rclpy `byte` / `char` scalars
        return value[0]
    return int(value)


def _convert_array(value: Any, subdesc: tuple, length: int, where: str, store: Typestore) -> Any:
    array: np.ndarray | list[Any]
    if subdesc[0] == Nodetype.BASE and subdesc[1][0] != "string":
        dtype = _numpy_dtype(subdesc[1][0])
        if isinstance(value, (bytes, bytearray, memoryview)):
            array = np.frombuffer(value, dtype=np.uint8)
        elif isinstance(value, list) and value and isinstance(value[0], (bytes, bytearray)):
            array = np.frombuffer(b"".join(value), dtype=np.uint8)  # rclpy byte[] = list of bytes
        else:
            array = np.asarray(value)
        if array.dtype != dtype:  # same dtype: no copy (point cloud data stays a view)
            array = array.astype(dtype)
        array = array.reshape(-1)
    else:
        array = [_convert_value(item, subdesc, f"{where}[{i}]", store) for i, item in enumerate(value)]
    if length and len(array) != length:
        raise BagError(f"field {where}: expected {length} elements, got {len(array)}")
    return array


def _convert_value(value: Any, desc: tuple, where: str, store: Typestore) -> Any:
    node, spec = desc
    if node == Nodetype.BASE:
        return _convert_base(value, spec[0])
    if node == Nodetype.NAME:
        return convert_message(value, spec, store, where)
    subdesc, length = spec
    return _convert_array(value, subdesc, length if node == Nodetype.ARRAY else 0, where, store)


def convert_message(msg: object | None, msgtype: str, store: Typestore, where: str = "") -> Any:
    """Build ``store``'s ``msgtype`` from ``msg`` field by field (None: all defaults).

    Fields are matched by name, case-insensitively; target fields the source lacks get their default
    (0, "", empty, zeros); source fields the target lacks (ROS 1 ``Header.seq``) are dropped.
    """
    cls = store.types[msgtype]
    if msg is not None and type(msg) is cls:
        return msg
    where = where or msgtype
    source = _source_fields(msg) if msg is not None else {}
    values = {}
    for name, desc in store.fielddefs[msgtype][1]:
        attr = normalize_fieldname(name)
        found = source.get(attr.lower()) or source.get(name.lower())
        if found is None:
            values[attr] = _default_value(desc, store)
        else:
            values[attr] = _convert_value(getattr(msg, found), desc, f"{where}.{name}", store)
    return cls(**values)


def to_ros2(msg: object, msgtype: str | None = None) -> Any:
    """Return ``msg`` as an instance of the ROS 2 Kilted typestore's class for ``msgtype``.

    ``msg`` may be a rosbags message of any typestore (ROS 1 included), an rclpy message or any object
    with the same attributes. A message already of the Kilted class is returned unchanged; otherwise a
    new one is built field by field (numeric arrays of the right dtype are shared, not copied).

    Args:
        msg: the message.
        msgtype: ROS 2 type name, e.g. ``"sensor_msgs/msg/PointCloud2"``; default: taken from ``msg``.

    Raises:
        BagError: Kilted has no such type, or a fixed-size array has the wrong length.
    """
    msgtype = msgtype or message_type(msg)
    if msgtype not in TYPESTORE.types:
        raise BagError(f"message type {msgtype!r} is not in the ROS 2 Kilted typestore")
    try:
        return convert_message(msg, msgtype, TYPESTORE)
    except (TypeError, ValueError) as err:
        if isinstance(err, BagError):
            raise
        raise BagError(f"cannot convert a {type(msg).__qualname__} to {msgtype}: {err}") from err
