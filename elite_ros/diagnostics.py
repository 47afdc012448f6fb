"""The segment node's health, as its /diagnostics report says it: level, message and values. No ROS import.

`HealthMonitor` is told what happens (a cloud arrived, a scan started / finished, a cloud was refused)
and, once per diagnostics period, `report(now)` says how the node is doing:

- WARN `stale input` when no cloud arrived for `stale_input_s` seconds (since start-up, before the
  first), counting a scan in progress and the moment it ended as fresh input (a busy node takes no new
  cloud; the next one comes from the middleware right after, unless the input really stopped);
- WARN `over budget` only when the last `SUSTAINED_OVERRUNS` scans all took longer than the latency
  budget, or the scan in progress has run for that many budgets: one slow scan (a page-fault storm, a
  co-process's burst) is reported in the values, not as a warning;
- WARN `late report` when this report comes more than `LATE_FACTOR` periods after the previous one:
  something blocked the node's timers (the node runs them in their own callback group, so this should
  not happen; when it does, the report says so instead of hiding it);
- WARN when clouds were refused (malformed) or failed since the previous report, with the last reason;
- OK otherwise: "segmenting within the latency budget", or "waiting for subscribers" when clouds come
  in but nobody subscribes to an output.

Times are seconds on a monotonic clock chosen by the caller; latencies are milliseconds. Thread-safe:
the node's cloud callback and its diagnostics timer run on different executor threads.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

OK, WARN = 0, 1  # diagnostic_msgs/DiagnosticStatus levels
#: consecutive scans over the latency budget before the report turns WARN
SUSTAINED_OVERRUNS = 3
#: a report more than this many periods after the previous one is late (the issue's goal: <= 1.5 s at 1 Hz)
LATE_FACTOR = 1.5
#: default latency budgets (ms) when the parameter is 0 (auto): one scan period of a 10 Hz LiDAR on a GPU;
#: on a CPU the network alone takes 0.2-1.2 s per 125k-point scan (README, benchmarks/student.py), so a
#: budget of one second warns when the CPU falls well behind its own pace, not on every scan
AUTO_BUDGET_MS = {"cuda": 100.0, "cpu": 1000.0}


def resolve_budget_ms(budget_ms: float, device_type: str) -> float:
    """The latency budget in use: `budget_ms`, or the device's AUTO_BUDGET_MS for 0."""
    if budget_ms > 0:
        return float(budget_ms)
    return AUTO_BUDGET_MS.get(device_type, AUTO_BUDGET_MS["cpu"])


@dataclass
class HealthReport:
    """One diagnostics report: level (OK / WARN), one-line message, values (key -> text)."""

    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


class HealthMonitor:
    """Collects what the node does and turns it into one `HealthReport` per period (see module docstring)."""

    def __init__(self, *, budget_ms: float, stale_input_s: float, period_s: float, now_s: float) -> None:
        self.budget_ms = budget_ms
        self.stale_input_s = stale_input_s
        self.period_s = period_s
        self._lock = threading.Lock()
        self._start_s = now_s
        self._last_arrival_s: float | None = None
        self._busy_since_s: float | None = None
        self._last_scan_end_s: float | None = None
        self._last_report_s: float | None = None
        self._recent_ms: deque[float] = deque(maxlen=SUSTAINED_OVERRUNS)
        self._period_max_ms = 0.0
        self._period_scans = 0
        self._period_refused = 0
        self._period_reason: str | None = None
        self._last_total_ms: float | None = None
        self.late_reports = 0  # reports that came late, since start-up

    def cloud_arrived(self, now_s: float) -> None:
        with self._lock:
            self._last_arrival_s = now_s

    def scan_started(self, now_s: float) -> None:
        with self._lock:
            self._busy_since_s = now_s

    def scan_finished(self, total_ms: float | None, now_s: float) -> None:
        """A scan ended at `now_s`: `total_ms` its processing time, None when it was refused or failed."""
        with self._lock:
            self._busy_since_s = None
            self._last_scan_end_s = now_s
            if total_ms is None:
                return
            self._recent_ms.append(total_ms)
            self._period_max_ms = max(self._period_max_ms, total_ms)
            self._period_scans += 1
            self._last_total_ms = total_ms

    def cloud_refused(self, reason: str) -> None:
        with self._lock:
            self._period_refused += 1
            self._period_reason = reason

    def report(self, now_s: float, *, processed: int, waiting_for_subscribers: bool) -> HealthReport:
        """The report for the period ending at `now_s`; starts the next period."""
        with self._lock:
            problems = self._problems(now_s)
            if problems:
                level, message = WARN, "; ".join(problems)
            elif processed == 0 and waiting_for_subscribers:
                level, message = OK, "waiting for subscribers (clouds arrive, no output is subscribed)"
            elif processed == 0:
                level, message = OK, "waiting for scans"
            else:
                level, message = OK, "segmenting within the latency budget"
            values = {
                "last_total_ms": "n/a" if self._last_total_ms is None else f"{self._last_total_ms:.3f}",
                "max_total_ms_since_last_report": f"{self._period_max_ms:.3f}",
                "scans_since_last_report": str(self._period_scans),
                "latency_budget_ms": f"{self.budget_ms:.3f}",
                "seconds_since_last_cloud": self._since(self._last_arrival_s, now_s),
                "seconds_since_last_report": self._since(self._last_report_s, now_s),
                "late_reports": str(self.late_reports),
            }
            self._last_report_s = now_s
            self._period_max_ms = 0.0
            self._period_scans = 0
            self._period_refused = 0
            self._period_reason = None
            return HealthReport(level=level, message=message, values=values)

    def _problems(self, now_s: float) -> list[str]:
        problems = []
        if self._last_report_s is not None and now_s - self._last_report_s > LATE_FACTOR * self.period_s:
            self.late_reports += 1
            problems.append(f"late report: {now_s - self._last_report_s:.2f} s since the previous one "
                            f"(period {self.period_s:g} s)")
        reference = self._start_s if self._last_arrival_s is None else self._last_arrival_s
        if self._last_scan_end_s is not None:
            reference = max(reference, self._last_scan_end_s)
        if self._busy_since_s is None and now_s - reference > self.stale_input_s:
            since = "since start-up" if self._last_arrival_s is None else "since the last one"
            problems.append(f"stale input: no cloud for {now_s - reference:.1f} s {since} "
                            f"(stale_input_s {self.stale_input_s:g})")
        running_ms = 0.0 if self._busy_since_s is None else (now_s - self._busy_since_s) * 1e3
        if running_ms > SUSTAINED_OVERRUNS * self.budget_ms:
            problems.append(f"over budget: the scan in progress has run {running_ms:.0f} ms "
                            f"(> {SUSTAINED_OVERRUNS} x {self.budget_ms:g} ms)")
        elif len(self._recent_ms) == SUSTAINED_OVERRUNS and min(self._recent_ms) > self.budget_ms:
            problems.append(f"over budget: the last {SUSTAINED_OVERRUNS} scans took {min(self._recent_ms):.0f}-"
                            f"{max(self._recent_ms):.0f} ms > {self.budget_ms:g} ms")
        if self._period_refused:
            problems.append(f"{self._period_refused} cloud(s) refused since the last report: {self._period_reason}")
        return problems

    @staticmethod
    def _since(then_s: float | None, now_s: float) -> str:
        return "n/a" if then_s is None else f"{now_s - then_s:.3f}"
