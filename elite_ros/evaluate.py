"""Accuracy and latency of a segmentation run, accumulated frame by frame (`Evaluation`).

The metric (confusion histogram accumulated over the run, IoU without class 0) is `elite_ros.metrics`,
the same code the training loop validates with. `elite_ros.report` writes the report folder,
`elite_ros.ground_truth` finds the ground truth in a cloud.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from elite_ros.labels import CLASS_NAMES, NUM_CLASSES
from elite_ros.metrics import confusion_matrix, iou_per_class, mean_iou

LATENCY_PERCENTILES = (50, 90, 99)


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p90, p99, max of per-frame latencies (milliseconds); empty -> count 0."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    stats = {"count": int(values.size), "mean_ms": float(values.mean())}
    for p in LATENCY_PERCENTILES:
        stats[f"p{p}_ms"] = float(np.percentile(values, p))
    stats["max_ms"] = float(values.max())
    return stats


@dataclass
class Evaluation:
    """Accumulates the confusion histogram and per-frame timings over a run."""

    confusion: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64))
    latency_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    frames: int = 0
    labelled_frames: int = 0
    points: int = 0

    def add_frame(self, timings_ms: dict[str, float] | None, num_points: int) -> None:
        """Count one segmented frame (with or without ground truth) and its timings (ms)."""
        self.frames += 1
        self.points += int(num_points)
        if timings_ms:
            if "total" in timings_ms:
                self.latency_ms.append(float(timings_ms["total"]))
            for stage, value in timings_ms.items():
                self.stage_ms.setdefault(stage, []).append(float(value))

    def add_labels(self, ground_truth: np.ndarray, prediction: np.ndarray) -> None:
        """Accumulate one frame's (N,) training ids."""
        self.confusion += confusion_matrix(ground_truth, prediction)
        self.labelled_frames += 1

    @property
    def iou(self) -> np.ndarray:
        return iou_per_class(self.confusion)

    @property
    def miou(self) -> float:
        return mean_iou(self.iou)

    def metrics(self) -> dict[str, Any]:
        """JSON-ready summary: frames, points, per-class IoU (None = NaN), mIoU, latency statistics."""
        iou = self.iou
        has_labels = self.labelled_frames > 0
        return {
            "frames": self.frames,
            "labelled_frames": self.labelled_frames,
            "points": self.points,
            "evaluated_points": int(self.confusion[1:, :].sum()),
            "miou": _json_float(self.miou) if has_labels else None,
            "iou": {CLASS_NAMES[c]: _json_float(v) for c, v in zip(range(1, NUM_CLASSES), iou)} if has_labels else {},
            "confusion": self.confusion.tolist(),
            "latency": latency_stats(self.latency_ms),
            "stages_ms": {stage: latency_stats(v) for stage, v in self.stage_ms.items()},
        }


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


