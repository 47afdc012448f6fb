"""Reading ROS 1 bags, rosbag2 folders and bare rosbag2 storage files: `bag_info` and `iter_messages`.

rosbag2 messages recorded with a definition that differs from Kilted's are decoded with the bag's own
definition and converted (`elite_ros.bag.conversion`); types Kilted does not know are decoded from the
definitions stored in the bag, best effort.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag1 import Reader as Ros1Reader
from rosbags.rosbag1 import ReaderError as Ros1ReaderError
from rosbags.rosbag2 import Reader as Ros2Reader
from rosbags.rosbag2 import ReaderError as Ros2ReaderError
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from elite_ros.bag.conversion import convert_message
from elite_ros.bag.formats import TYPESTORE, BagError, BagMessage, detect_format

_IDL_SEPARATOR = "=" * 80 + "\n"


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
            return convert_message(msg, self.msgtype, TYPESTORE) if self.convert else msg
        except Exception as err:  # noqa: BLE001 - damaged bytes break the deserialisers in many ways
            raise BagError(f"{self.where}: cannot decode message: {_reason(err)}") from None


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
        except Exception as err:  # noqa: BLE001 - the storage libraries' own errors (apsw, lz4, bz2, OSError)
            raise BagError(f"{self.path}: cannot open {self.format} bag: {_reason(err)}") from None
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
        except BagError:
            raise
        except (Ros1ReaderError, Ros2ReaderError) as err:
            raise BagError(f"{bag.path}: cannot read: {err}") from None
        except Exception as err:  # noqa: BLE001 - a damaged storage file (apsw.CorruptError, lz4, bz2, OSError)
            raise BagError(f"{bag.path}: cannot read: {_reason(err)} (the file is damaged?)") from None


def _reason(error: BaseException) -> str:
    """One line: the error's type and message."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
