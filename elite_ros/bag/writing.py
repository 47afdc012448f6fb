"""Writing rosbag2 (version 9, CDR) with mcap or sqlite3 storage, atomically: `BagWriter`."""
from __future__ import annotations

import errno
import os
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

from rosbags.interfaces import Connection
from rosbags.rosbag2 import Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import TypesysError
from rosbags.typesys.store import Typestore

from elite_ros.atomic import atomic_dir
from elite_ros.bag.conversion import to_ros2
from elite_ros.bag.formats import ROSBAG2_VERSION, STORAGES, TYPESTORE, BagError


class BagWriter:
    """Write a rosbag2 folder atomically: ``with BagWriter(path) as out: out.write(...)``.

    The bag is written to ``<parent>/.<name>.partial-<random>/<name>`` (`elite_ros.atomic.atomic_dir`) and
    moved to ``path`` when the ``with`` block ends without an exception; on an exception the partial bag is
    deleted. The
    storage file inside is named after the final folder (``<name>/<name>.mcap``), as ``ros2 bag`` does.

    Args:
        path: output folder; must not exist (nothing is ever overwritten). Missing parents are created.
        storage: ``"mcap"`` (default) or ``"sqlite3"``.
        typestore: serialise with this typestore instead of Kilted (for custom message types); messages
            are then written as given, without conversion.

    Raises:
        FileExistsError: ``path`` exists.
        ValueError: unknown ``storage``.
        OutputError (on entering): ``path`` cannot be written there (a parent is a file, no permission).
        BagError (on entering, writing): the storage cannot be written (e.g. the disk is full).
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
        self._folder: AbstractContextManager[Path] | None = None
        self._connections: dict[str, Connection] = {}
        self.message_count = 0

    def _refuse_existing(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            raise FileExistsError(errno.EEXIST, "output exists, refusing to overwrite it", str(self.path))

    def __enter__(self) -> BagWriter:
        if self._writer is not None or self._folder is not None:
            raise BagError(f"{self.path}: BagWriter can be entered only once")
        self._refuse_existing()
        self._folder = atomic_dir(self.path, take_empty=False, create=False)  # rosbags creates the folder
        partial = self._folder.__enter__()
        try:
            self._writer = Writer(partial, version=ROSBAG2_VERSION, storage_plugin=STORAGES[self.storage])
            self._writer.open()
        except BaseException as error:
            self._writer = None
            self._leave_folder(error)
            if isinstance(error, OSError):
                raise BagError(f"{self.path}: cannot write the bag: {error.strerror or error}") from None
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
        try:
            self._writer.write(connection, int(timestamp_ns), data)
        except OSError as err:  # e.g. the disk is full
            raise BagError(f"{self.path}: cannot write: {err.strerror or err}") from None
        self.message_count += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        writer, self._writer = self._writer, None
        if exc is not None:
            if writer is not None:
                try:
                    writer.abort()
                except Exception:  # noqa: BLE001 - the partial bag is deleted anyway
                    pass
            self._leave_folder(exc)
            return
        try:
            assert writer is not None
            writer.close()
        except BaseException as error:
            self._leave_folder(error)
            if isinstance(error, OSError):
                raise BagError(f"{self.path}: cannot finish the bag: {error.strerror or error}") from None
            raise
        self._leave_folder(None)  # renamed into place; FileExistsError if someone created `path` meanwhile

    def _leave_folder(self, error: BaseException | None) -> None:
        """End the atomic folder: rename it into place (`error` None) or delete it."""
        folder, self._folder = self._folder, None
        if folder is not None:
            folder.__exit__(None if error is None else type(error), error,
                            None if error is None else error.__traceback__)
