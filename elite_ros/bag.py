"""Reading and writing robot recordings through `rosbags`, with no ROS installation needed.

Reads ROS 1 bags (``.bag``, format 2.0), rosbag2 folders (``metadata.yaml`` + sqlite3 or mcap storage)
and bare rosbag2 storage files (``.db3``, ``.mcap``). Every message comes out as an instance of the
ROS 2 Kilted typestore's class (:data:`TYPESTORE`): ROS 1 messages are converted field by field (the
ROS 1 ``Header.seq`` is dropped, ROS 1 ``time`` becomes ``builtin_interfaces/msg/Time``, ``CameraInfo``'s
``D/K/R/P`` become ``d/k/r/p``), and rosbag2 messages recorded with a definition that differs from
Kilted's are decoded with the bag's own definition and converted the same way. Types Kilted does not
know are decoded from the definitions stored in the bag, best effort.

Writes rosbag2 (version 9, CDR) with mcap (default) or sqlite3 storage, keeping each message's
timestamp. Outputs are never overwritten and appear atomically: the bag is written inside a temporary
sibling folder and renamed to its final name only when it was closed cleanly.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple

import numpy as np
import yaml
from rosbags.interfaces import Connection, MessageDefinitionFormat, Nodetype
from rosbags.rosbag1 import Reader as Ros1Reader
from rosbags.rosbag1 import ReaderError as Ros1ReaderError
from rosbags.rosbag2 import Reader as Ros2Reader
from rosbags.rosbag2 import ReaderError as Ros2ReaderError
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.base import normalize_fieldname
from rosbags.typesys.store import Typestore

__all__ = [
    "BagError",
    "BagFormat",
    "BagMessage",
    "BagWriter",
    "TYPESTORE",
    "bag_info",
    "detect_format",
    "iter_messages",
    "message_type",
    "to_ros2",
]

#: The one typestore downstream code sees: ROS 2 Kilted message classes.
TYPESTORE: Typestore = get_typestore(Stores.ROS2_KILTED)

BagFormat = Literal["ros1", "sqlite3", "mcap"]
#: rosbag2 metadata version written (rosbags 0.11 writes 8 or 9; 9 = Jazzy/Kilted QoS layout).
ROSBAG2_VERSION = 9
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

_ROS1_MAGIC = b"#ROSBAG V2.0\n"
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_METADATA = "metadata.yaml"
_IDL_SEPARATOR = "=" * 80 + "\n"


class BagError(ValueError):
    """A path is not a readable bag, or a message in it cannot be decoded or written."""


class BagMessage(NamedTuple):
    """One message of a bag, in bag order (receive time)."""

    topic: str
    msgtype: str  # ROS 2 spelling, e.g. "sensor_msgs/msg/PointCloud2", also for ROS 1 bags
    timestamp: int  # bag (receive/record) time, integer nanoseconds since the epoch
    msg: Any  # instance of TYPESTORE.types[msgtype] (ROS 2 Kilted) where Kilted has the type


# --------------------------------------------------------------------------------------------------
# format detection


def _read_magic(path: Path, size: int) -> bytes:
    with path.open("rb") as stream:
        return stream.read(size)


def detect_format(path: str | os.PathLike[str]) -> BagFormat:
    """Say which container ``path`` is: ``"ros1"``, ``"sqlite3"`` or ``"mcap"``.

    Accepts a ROS 1 ``.bag`` file, a rosbag2 folder (with ``metadata.yaml``) and a bare rosbag2 storage
    file (``.db3`` or ``.mcap``). Checks the file signature, not only the name.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        BagError: ``path`` exists but is no bag that can be read (the message says why).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "bag not found", str(path))
    if path.is_dir():
        metadata = path / _METADATA
        if not metadata.is_file():
            raise BagError(f"{path}: not a bag: a rosbag2 folder needs {_METADATA}, none found")
        try:
            info = yaml.safe_load(metadata.read_text(encoding="utf-8"))
            storage = info["rosbag2_bagfile_information"]["storage_identifier"]
        except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as err:
            raise BagError(f"{metadata}: not valid rosbag2 metadata ({type(err).__name__}: {err})") from None
        if storage not in STORAGES:
            raise BagError(f"{metadata}: storage_identifier {storage!r} is not supported (sqlite3 or mcap)")
        return storage
    magic = _read_magic(path, 16)
    suffix = path.suffix.lower()
    if magic.startswith(_ROS1_MAGIC):
        return "ros1"
    if magic.startswith(_MCAP_MAGIC) or magic.startswith(_SQLITE_MAGIC):
        found: BagFormat = "mcap" if magic.startswith(_MCAP_MAGIC) else "sqlite3"
        wanted = ".mcap" if found == "mcap" else ".db3"
        if suffix != wanted:
            raise BagError(f"{path}: a bare {found} storage file must be named *{wanted} to be read")
        return found
    if magic.startswith(b"#ROSBAG"):
        version = magic.splitlines()[0].decode(errors="replace")
        raise BagError(f"{path}: unsupported ROS 1 bag version {version!r} (V2.0 is read)")
    raise BagError(f"{path}: not a bag (no ROS 1, mcap or sqlite3 signature; expected a .bag, .db3 or .mcap "
                   f"file or a rosbag2 folder)")


# --------------------------------------------------------------------------------------------------
# message conversion between typestores


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
        return _convert(None, spec, store)
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
        return _convert(value, spec, store, where)
    subdesc, length = spec
    return _convert_array(value, subdesc, length if node == Nodetype.ARRAY else 0, where, store)


def _convert(msg: object | None, msgtype: str, store: Typestore, where: str = "") -> Any:
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
        return _convert(msg, msgtype, TYPESTORE)
    except (TypeError, ValueError) as err:
        if isinstance(err, BagError):
            raise
        raise BagError(f"cannot convert a {type(msg).__qualname__} to {msgtype}: {err}") from err


# --------------------------------------------------------------------------------------------------
# reading


def _types_from_definition(connection: Connection) -> dict:
    """Type definitions a bag stores for one connection (ROS 1 / ROS 2 .msg text or IDL)."""
    msgdef = connection.msgdef
    if msgdef.format == MessageDefinitionFormat.MSG:
        return get_types_from_msg(msgdef.data, connection.msgtype)
    if msgdef.format == MessageDefinitionFormat.IDL:
        types: dict = {}
        if msgdef.data.startswith(f"{_IDL_SEPARATOR}IDL: "):
            for part in msgdef.data.split(_IDL_SEPARATOR)[1:]:
                types.update(get_types_from_idl(part.split("\n", 1)[1]))
        else:
            types.update(get_types_from_idl(msgdef.data))
        return types
    return {}


def _store_with(types: dict) -> Typestore:
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    return store


class _Decoder:
    """Turns one connection's raw bytes into a Kilted message (see module docstring)."""

    def __init__(self, connection: Connection, ros1_store: Typestore | None, path: Path) -> None:
        self.msgtype = connection.msgtype
        self.where = f"{path}: topic {connection.topic!r} ({connection.msgtype})"
        known = self.msgtype in TYPESTORE.types
        if ros1_store is not None:
            self.store, self.ros1, self.convert = ros1_store, True, known
            return
        self.ros1 = False
        bag_types: dict = {}
        if connection.msgdef.format != MessageDefinitionFormat.NONE:
            try:
                bag_types = _types_from_definition(connection)
            except TypesysError as err:
                if not known:
                    raise BagError(f"{self.where}: cannot parse the stored definition: {err}") from None
        if known and (not bag_types or self._matches_kilted(connection, bag_types)):
            self.store, self.convert = TYPESTORE, False
        elif bag_types:
            self.store, self.convert = _store_with(bag_types), known
        else:
            raise BagError(f"{self.where}: type not in the ROS 2 Kilted typestore and the bag stores no "
                           f"definition for it")

    def _matches_kilted(self, connection: Connection, bag_types: dict) -> bool:
        kilted = TYPESTORE.hash_rihs01(self.msgtype)
        if connection.digest.startswith("RIHS01_"):
            return connection.digest == kilted
        try:
            return _store_with(bag_types).hash_rihs01(self.msgtype) == kilted
        except (TypesysError, KeyError):
            return True  # cannot tell: trust the type name

    def __call__(self, rawdata: bytes | memoryview) -> Any:
        try:
            if self.ros1:
                msg = self.store.deserialize_ros1(rawdata, self.msgtype)
            else:
                msg = self.store.deserialize_cdr(rawdata, self.msgtype)
        except (SerdeError, ValueError, IndexError, KeyError, AssertionError) as err:
            raise BagError(f"{self.where}: cannot decode message: {err}") from None
        return _convert(msg, self.msgtype, TYPESTORE) if self.convert else msg


def _ros1_store(connections: Iterable[Connection]) -> Typestore:
    """One typestore with the ROS 1 definitions a ROS 1 bag carries (Noetic's as a fallback)."""
    types: dict = {}
    for connection in connections:
        types.update(_types_from_definition(connection))
    return _store_with(types) if types else get_typestore(Stores.ROS1_NOETIC)


class _OpenBag:
    """An open reader with format, per-topic info and per-connection decoders."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.format = detect_format(self.path)
        self.reader = Ros1Reader(self.path) if self.format == "ros1" else Ros2Reader(self.path)

    def __enter__(self) -> _OpenBag:
        try:
            self.reader.open()
        except (Ros1ReaderError, Ros2ReaderError, TypesysError) as err:
            raise BagError(f"{self.path}: cannot open {self.format} bag: {err}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()

    def decoders(self, connections: list[Connection]) -> dict[int, _Decoder]:
        ros1_store = None
        if self.format == "ros1":
            try:
                ros1_store = _ros1_store(self.reader.connections)
            except TypesysError as err:
                raise BagError(f"{self.path}: cannot parse the message definitions: {err}") from None
        return {c.id: _Decoder(c, ros1_store, self.path) for c in connections}


def bag_info(path: str | os.PathLike[str]) -> dict[str, tuple[str, int]]:
    """Topics of a bag: ``{topic: (msgtype, message count)}``, topics sorted by name.

    ``msgtype`` is in ROS 2 spelling (``sensor_msgs/msg/PointCloud2``) for ROS 1 bags too; a topic
    recorded with several types lists them joined by ``"|"``.
    """
    with _OpenBag(path) as bag:
        info = {}
        for topic, topic_info in sorted(bag.reader.topics.items()):
            msgtype = topic_info.msgtype or "|".join(sorted({c.msgtype for c in topic_info.connections}))
            info[topic] = (msgtype, int(topic_info.msgcount))
        return info


def iter_messages(
    path: str | os.PathLike[str],
    topics: str | Iterable[str] | None = None,
    msgtypes: str | Iterable[str] | None = None,
    *,
    start: int | None = None,
    stop: int | None = None,
) -> Iterator[BagMessage]:
    """Yield the messages of a bag in time order, decoded to ROS 2 Kilted classes.

    Args:
        path: ROS 1 ``.bag``, rosbag2 folder, or bare ``.db3`` / ``.mcap`` file.
        topics: only these topics (each must exist in the bag); None: all.
        msgtypes: only these ROS 2 type names (e.g. ``"sensor_msgs/msg/PointCloud2"``); None: all.
        start, stop: only messages with ``start <= timestamp < stop`` (ns).

    Raises:
        FileNotFoundError, BagError: see :func:`detect_format`; BagError also for a requested topic the
        bag does not have and for a message that cannot be decoded (naming topic and type).
    """
    detect_format(path)  # a bad path fails here, not at the first next()
    return _iter_messages(Path(path), _as_set(topics), _as_set(msgtypes), start, stop)


def _as_set(names: str | Iterable[str] | None) -> set[str] | None:
    if names is None:
        return None
    return {names} if isinstance(names, str) else set(names)


def _iter_messages(path: Path, wanted_topics: set[str] | None, wanted_types: set[str] | None,
                   start: int | None, stop: int | None) -> Iterator[BagMessage]:
    with _OpenBag(path) as bag:
        connections = list(bag.reader.connections)
        if wanted_topics is not None:
            missing = wanted_topics - {c.topic for c in connections}
            if missing:
                raise BagError(f"{bag.path}: no topic {sorted(missing)} in this bag; it has "
                               f"{sorted({c.topic for c in connections})}")
            connections = [c for c in connections if c.topic in wanted_topics]
        if wanted_types is not None:
            connections = [c for c in connections if c.msgtype in wanted_types]
        if not connections:
            return
        decoders = bag.decoders(connections)
        try:
            for connection, timestamp, rawdata in bag.reader.messages(connections, start=start, stop=stop):
                decode = decoders[connection.id]
                yield BagMessage(connection.topic, connection.msgtype, int(timestamp), decode(rawdata))
        except (Ros1ReaderError, Ros2ReaderError) as err:
            raise BagError(f"{bag.path}: cannot read: {err}") from None


# --------------------------------------------------------------------------------------------------
# writing


class BagWriter:
    """Write a rosbag2 folder atomically: ``with BagWriter(path) as out: out.write(...)``.

    The bag is written to ``<parent>/.<name>.partial-<pid>-<random>/<name>`` and moved to ``path`` when
    the ``with`` block ends without an exception; on an exception the partial bag is deleted. The
    storage file inside is named after the final folder (``<name>/<name>.mcap``), as ``ros2 bag`` does.

    Args:
        path: output folder; must not exist (nothing is ever overwritten). Missing parents are created.
        storage: ``"mcap"`` (default) or ``"sqlite3"``.
        typestore: serialise with this typestore instead of Kilted (for custom message types); messages
            are then written as given, without conversion.

    Raises:
        FileExistsError: ``path`` exists.
        ValueError: unknown ``storage``.
    """

    def __init__(self, path: str | os.PathLike[str], storage: str = "mcap", *,
                 typestore: Typestore | None = None) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        self._refuse_existing()
        self.storage = storage
        self._typestore = typestore
        self._writer: Writer | None = None
        self._partial: Path | None = None
        self._connections: dict[str, Connection] = {}
        self.message_count = 0

    def _refuse_existing(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            raise FileExistsError(errno.EEXIST, "output exists, refusing to overwrite it", str(self.path))

    def __enter__(self) -> BagWriter:
        if self._writer is not None or self._partial is not None:
            raise BagError(f"{self.path}: BagWriter can be entered only once")
        self._refuse_existing()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-{os.getpid()}-",
                                              dir=self.path.parent))
        try:
            self._writer = Writer(self._partial / self.path.name, version=ROSBAG2_VERSION,
                                  storage_plugin=STORAGES[self.storage])
            self._writer.open()
        except BaseException:
            self._discard()
            raise
        return self

    def write(self, topic: str, msgtype: str, timestamp_ns: int, msg: object) -> None:
        """Append one message.

        Args:
            topic: topic name; the first message of a topic fixes its type.
            msgtype: ROS 2 type name, e.g. ``"sensor_msgs/msg/PointCloud2"``.
            timestamp_ns: record time, integer nanoseconds since the epoch (>= 0), stored as given.
            msg: a Kilted typestore message, or anything :func:`to_ros2` converts (rclpy, ROS 1 rosbags).

        Raises:
            BagError: writer not open, topic already used with another type, message not serialisable.
            ValueError: negative or non-integer timestamp.
        """
        if self._writer is None:
            raise BagError(f"{self.path}: write() outside the `with BagWriter(...)` block")
        if isinstance(timestamp_ns, (bool, float)) or int(timestamp_ns) != timestamp_ns or timestamp_ns < 0:
            raise ValueError(f"timestamp_ns must be a non-negative integer (ns), got {timestamp_ns!r}")
        store = self._typestore or TYPESTORE
        connection = self._connections.get(topic)
        if connection is None:
            if msgtype not in store.types:
                raise BagError(f"{self.path}: topic {topic!r}: message type {msgtype!r} is not in the "
                               f"typestore; pass BagWriter(typestore=...) with its definition")
            try:
                connection = self._writer.add_connection(topic, msgtype, typestore=store)
            except (WriterError, TypesysError) as err:
                raise BagError(f"{self.path}: cannot add topic {topic!r} ({msgtype}): {err}") from None
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise BagError(f"{self.path}: topic {topic!r} already has type {connection.msgtype}, "
                           f"cannot write a {msgtype}")
        if self._typestore is None:
            msg = to_ros2(msg, msgtype)
        try:
            data = store.serialize_cdr(msg, msgtype)
        except (SerdeError, TypeError, ValueError, AttributeError, KeyError, OverflowError) as err:
            raise BagError(f"{self.path}: topic {topic!r}: cannot serialise {msgtype}: {err}") from None
        self._writer.write(connection, int(timestamp_ns), data)
        self.message_count += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        writer, self._writer = self._writer, None
        if exc_type is not None:
            if writer is not None:
                try:
                    writer.abort()
                except Exception:  # noqa: BLE001 - the partial bag is deleted anyway
                    pass
            self._discard()
            return
        try:
            assert writer is not None and self._partial is not None
            writer.close()
            self._refuse_existing()  # someone may have created it meanwhile: keep theirs, fail ours
            os.rename(self._partial / self.path.name, self.path)
        except BaseException:
            self._discard()
            raise
        self._discard()

    def _discard(self) -> None:
        partial, self._partial = self._partial, None
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
