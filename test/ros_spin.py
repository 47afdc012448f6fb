"""Spinning an rclpy executor in tests until something has happened."""
from __future__ import annotations

import time

TIMEOUT_S = 60.0  # generous: DDS discovery and a CPU scan on a loaded machine


def spin_until(executor, condition, timeout_s: float = TIMEOUT_S) -> bool:
    """Spin `executor` until `condition()` holds or `timeout_s` passes; the condition's last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()
