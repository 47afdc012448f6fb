"""Which container a bag is (`detect_format`), the one typestore messages come out in, and the bag's errors."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import yaml
from rosbags.rosbag2 import StoragePlugin
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

#: The one typestore downstream code sees: ROS 2 Kilted message classes.
TYPESTORE: Typestore = get_typestore(Stores.ROS2_KILTED)

BagFormat = Literal["ros1", "sqlite3", "mcap"]
#: rosbag2 metadata version written (rosbags 0.11 writes 8 or 9; 9 = Jazzy/Kilted QoS layout).
ROSBAG2_VERSION: Final = 9
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

_ROS1_MAGIC = b"#ROSBAG V2.0\n"
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_METADATA = "metadata.yaml"


class BagError(ValueError):
    """A path is not a readable bag, or a message in it cannot be decoded or written."""


class BagMessage(NamedTuple):
    """One message of a bag, in bag order (receive time)."""

    topic: str
    msgtype: str  # ROS 2 spelling, e.g. "sensor_msgs/msg/PointCloud2", also for ROS 1 bags
    timestamp: int  # bag (receive/record) time, integer nanoseconds since the epoch
    msg: Any  # instance of TYPESTORE.types[msgtype] (ROS 2 Kilted) where Kilted has the type


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
