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

Four modules, one job each, with the public names importable from here: `formats` (detection, typestore,
errors), `conversion` (to Kilted classes), `reading` (`bag_info`, `iter_messages`), `writing` (`BagWriter`).
"""
from elite_ros.bag.conversion import message_type, to_ros2
from elite_ros.bag.formats import (
    ROSBAG2_VERSION,
    STORAGES,
    TYPESTORE,
    BagError,
    BagFormat,
    BagMessage,
    detect_format,
)
from elite_ros.bag.reading import bag_info, iter_messages
from elite_ros.bag.writing import BagWriter

__all__ = [
    "ROSBAG2_VERSION",
    "STORAGES",
    "TYPESTORE",
    "BagError",
    "BagFormat",
    "BagMessage",
    "BagWriter",
    "bag_info",
    "detect_format",
    "iter_messages",
    "message_type",
    "to_ros2",
]
