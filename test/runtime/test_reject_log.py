"""elite_ros.reject_log: one warning per distinct reason per period, with topic and stamp."""
from __future__ import annotations

from elite_ros.reject_log import RejectLog, format_stamp, reason_kind


def test_each_distinct_reason_is_logged_and_repeats_are_counted():
    log = RejectLog(period_s=5.0)
    short = "malformed PointCloud2: data has 100 bytes, row_step * height needs 200"
    missing = "malformed PointCloud2: no 'z' field"
    first = log.line(short, topic="/lidar", stamp=format_stamp(12, 5), now_s=0.0)
    assert first == f"refused cloud on /lidar stamped 12.000000005: {short}"
    # the same kind (other sizes) is held back within the period, another kind is not
    assert log.line(short.replace("100", "150"), topic="/lidar", stamp="13.0", now_s=1.0) is None
    assert log.line(short, topic="/lidar", stamp="14.0", now_s=2.0) is None
    line = log.line(missing, topic="/lidar", stamp="15.0", now_s=2.5)
    assert line == f"refused cloud on /lidar stamped 15.0: {missing}"
    again = log.line(short, topic="/lidar", stamp="16.0", now_s=5.0)
    assert again is not None and again.endswith("(+2 more like it since the last such line)")
    assert log.line(missing, topic="/lidar", stamp="17.0", now_s=6.0) is None


def test_reason_kind_ignores_numbers_only():
    overlap = "field 'x' at offset {} overlaps 'y' at {}"
    assert reason_kind(overlap.format(4, 2)) == reason_kind(overlap.format(8, 6))
    assert reason_kind("no 'z' field") != reason_kind("no 'x' field")
