"""Warnings for clouds the node refuses: topic, stamp and reason, one line per distinct reason per period.

A LiDAR that publishes a malformed cloud usually publishes it ten times a second; a second fault (say a
missing field after a driver restart) must still reach the log. `RejectLog.line` gives the line to log
for a refused cloud, or None while the same kind of reason was already logged in the last `period_s`
seconds; the next line of that kind says how many were held back. Reasons of one kind differ only in
their numbers (sizes, counts), so numbers are ignored when reasons are compared. No ROS import.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

LOG_PERIOD_S = 5.0  # at most one line per kind of reason this often
_NUMBER = re.compile(r"\d+(\.\d+)?")


def reason_kind(reason: str) -> str:
    """`reason` with its numbers replaced: the key under which repeats are held back."""
    return _NUMBER.sub("#", reason)


def format_stamp(sec: int, nanosec: int) -> str:
    """A header stamp as seconds with nine decimals, as ``ros2 topic echo`` shows it."""
    return f"{sec}.{nanosec:09d}"


@dataclass
class _Kind:
    logged_s: float
    held_back: int = 0


class RejectLog:
    """Decides which refused clouds are logged (see the module docstring); times in seconds, monotonic."""

    def __init__(self, period_s: float = LOG_PERIOD_S) -> None:
        self.period_s = period_s
        self._kinds: dict[str, _Kind] = {}

    def line(self, reason: str, *, topic: str, stamp: str, now_s: float) -> str | None:
        """The warning to log for this refused cloud, or None when its kind was logged < `period_s` ago."""
        key = reason_kind(reason)
        kind = self._kinds.get(key)
        if kind is not None and now_s - kind.logged_s < self.period_s:
            kind.held_back += 1
            return None
        held_back = 0 if kind is None else kind.held_back
        self._kinds[key] = _Kind(logged_s=now_s)
        more = f" (+{held_back} more like it since the last such line)" if held_back else ""
        return f"refused cloud on {topic} stamped {stamp}: {reason}{more}"
