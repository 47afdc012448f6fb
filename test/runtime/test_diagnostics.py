"""elite_ros.diagnostics: stale input, sustained overruns, late reports, refused clouds."""
from __future__ import annotations

import pytest

from elite_ros.diagnostics import (
    AUTO_BUDGET_MS,
    OK,
    SUSTAINED_OVERRUNS,
    WARN,
    HealthMonitor,
    resolve_budget_ms,
)


def monitor(**overrides) -> HealthMonitor:
    values = {"budget_ms": 100.0, "stale_input_s": 1.0, "period_s": 1.0, "now_s": 0.0} | overrides
    return HealthMonitor(**values)


def scan(m: HealthMonitor, now_s: float, total_ms: float) -> None:
    m.cloud_arrived(now_s)
    m.scan_started(now_s)
    m.scan_finished(total_ms, now_s + total_ms / 1e3)


def test_ok_while_scans_arrive_within_budget():
    m = monitor()
    scan(m, 0.5, 40.0)
    report = m.report(1.0, processed=1, waiting_for_subscribers=False)
    assert report.level == OK and report.message == "segmenting within the latency budget"
    assert report.values["max_total_ms_since_last_report"] == "40.000"
    assert report.values["scans_since_last_report"] == "1"


def test_stale_input_turns_warn_before_and_after_the_first_cloud():
    m = monitor(stale_input_s=1.0)
    assert m.report(0.9, processed=0, waiting_for_subscribers=False).level == OK
    report = m.report(1.5, processed=0, waiting_for_subscribers=False)
    assert report.level == WARN and "stale input" in report.message and "since start-up" in report.message
    scan(m, 2.0, 10.0)
    assert m.report(2.5, processed=1, waiting_for_subscribers=False).level == OK
    report = m.report(3.5, processed=1, waiting_for_subscribers=False)
    assert report.level == WARN and "no cloud for 1.5 s since the last one" in report.message


def test_a_busy_node_is_not_stale():
    m = monitor(stale_input_s=1.0, budget_ms=60_000.0)
    m.cloud_arrived(0.0)
    m.scan_started(0.0)  # a long scan: no new cloud is taken meanwhile
    assert m.report(3.0, processed=0, waiting_for_subscribers=False).level == OK
    m.scan_finished(3000.0, 3.0)  # the report that falls between this scan and the next is not stale either
    assert m.report(3.05, processed=1, waiting_for_subscribers=False).level == OK
    report = m.report(4.5, processed=1, waiting_for_subscribers=False)  # but no next cloud for 1.5 s is
    assert report.level == WARN and "stale input" in report.message


def test_warn_only_on_sustained_overruns():
    m = monitor(budget_ms=100.0, stale_input_s=100.0)
    scan(m, 0.1, 500.0)  # one slow scan: reported in the values, still OK
    report = m.report(1.0, processed=1, waiting_for_subscribers=False)
    assert report.level == OK and report.values["max_total_ms_since_last_report"] == "500.000"
    for i in range(SUSTAINED_OVERRUNS):
        scan(m, 1.1 + 0.1 * i, 150.0 + i)
    report = m.report(2.0, processed=4, waiting_for_subscribers=False)
    assert report.level == WARN and f"last {SUSTAINED_OVERRUNS} scans took 150-152 ms > 100 ms" in report.message
    scan(m, 2.1, 50.0)  # back within budget
    assert m.report(3.0, processed=5, waiting_for_subscribers=False).level == OK


def test_a_scan_that_runs_for_several_budgets_warns_while_it_runs():
    m = monitor(budget_ms=100.0, stale_input_s=100.0)
    m.cloud_arrived(0.0)
    m.scan_started(0.0)
    report = m.report(1.0, processed=0, waiting_for_subscribers=False)
    assert report.level == WARN and "scan in progress has run 1000 ms" in report.message


def test_a_late_report_is_caught():
    m = monitor(stale_input_s=100.0)
    assert m.report(1.0, processed=0, waiting_for_subscribers=False).level == OK
    assert m.report(2.4, processed=0, waiting_for_subscribers=False).level == OK  # 1.4 periods: on time
    report = m.report(4.5, processed=0, waiting_for_subscribers=False)  # 2.1 s after the previous one
    assert report.level == WARN and "late report: 2.10 s since the previous one" in report.message
    assert report.values["seconds_since_last_report"] == "2.100" and report.values["late_reports"] == "1"
    assert m.report(5.4, processed=0, waiting_for_subscribers=False).level == OK


def test_refused_clouds_warn_for_one_period():
    m = monitor(stale_input_s=100.0)
    m.cloud_arrived(0.1)
    m.scan_started(0.1)
    m.scan_finished(None, 0.1)
    m.cloud_refused("malformed PointCloud2: no 'x' field")
    report = m.report(1.0, processed=0, waiting_for_subscribers=False)
    assert report.level == WARN and "1 cloud(s) refused" in report.message and "no 'x' field" in report.message
    assert m.report(2.0, processed=0, waiting_for_subscribers=False).level == OK


def test_waiting_for_subscribers():
    m = monitor(stale_input_s=100.0)
    m.cloud_arrived(0.5)
    report = m.report(1.0, processed=0, waiting_for_subscribers=True)
    assert report.level == OK and report.message.startswith("waiting for subscribers")


@pytest.mark.parametrize(("budget", "device", "expected"),
                         [(0.0, "cuda", AUTO_BUDGET_MS["cuda"]), (0.0, "cpu", AUTO_BUDGET_MS["cpu"]),
                          (250.0, "cpu", 250.0)])
def test_budget_auto_per_device(budget, device, expected):
    assert resolve_budget_ms(budget, device) == expected
