"""Accuracy and latency of a segmentation run, accumulated frame by frame (`Evaluation`).

The metric (confusion histogram accumulated over the run, IoU without class 0) is `elite_ros.metrics`,
the same code the training loop validates with, over the model's classes (`labels.ClassTable`: the
checkpoint's, SemanticKITTI's by default). `elite_ros.report` writes the report folder,
`elite_ros.ground_truth` finds the ground truth in a cloud.

The bird's-eye view (`elite_ros.bev`) shows the frame of median mIoU, chosen while streaming so that one
frame's points are held, never all frames': every labelled frame's own mIoU is recorded, and a frame
replaces the kept one when its mIoU is nearer than the kept frame's to the median of the per-frame mIoUs
recorded so far (its points are only read then). The report names the frame and both numbers.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from elite_ros.bev import BevFrame
from elite_ros.cloud import Scan
from elite_ros.labels import SEMANTIC_KITTI, ClassTable
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
    """Accumulates the confusion histogram, per-frame timings and the bird's-eye-view frame over a run.

    classes: the model's classes (the confusion is C x C). frame_miou: each labelled frame's own mIoU
    (frames without any scored class left out). bev: the frame kept for the bird's-eye view, or None.
    """

    classes: ClassTable = SEMANTIC_KITTI
    latency_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    frames: int = 0
    labelled_frames: int = 0
    points: int = 0
    frame_miou: list[float] = field(default_factory=list)
    bev: BevFrame | None = None
    confusion: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.classes.num_classes, self.classes.num_classes), np.int64)

    def add_frame(self, timings_ms: dict[str, float] | None, num_points: int) -> None:
        """Count one segmented frame (with or without ground truth) and its timings (ms)."""
        self.frames += 1
        self.points += int(num_points)
        if timings_ms:
            if "total" in timings_ms:
                self.latency_ms.append(float(timings_ms["total"]))
            for stage, value in timings_ms.items():
                self.stage_ms.setdefault(stage, []).append(float(value))

    def add_labels(self, ground_truth: np.ndarray, prediction: np.ndarray,
                   points: Scan | Callable[[], Scan] | None = None, name: str = "") -> None:
        """Accumulate one frame's (N,) training ids (N = message points).

        points: the frame's points (a Scan: ``xyz`` (K, 3) metres, ``index`` (K,) message positions), or a
        callable giving them, read only if this frame becomes the bird's-eye-view candidate; None = not a
        candidate. name: how the report names the frame (e.g. topic and stamp).
        """
        frame_confusion = confusion_matrix(ground_truth, prediction, self.classes.num_classes)
        self.confusion += frame_confusion
        self.labelled_frames += 1
        miou = mean_iou(iou_per_class(frame_confusion))
        if not math.isfinite(miou):
            return
        self.frame_miou.append(miou)
        if points is None:
            return
        median = float(np.median(self.frame_miou))
        if self.bev is None or abs(miou - median) < abs(self.bev.miou - median):
            scan = points() if callable(points) else points
            self.bev = BevFrame.from_scan(scan, ground_truth, prediction, miou=miou,
                                          labelled_frame=self.labelled_frames - 1, name=name)

    @property
    def iou(self) -> np.ndarray:
        return iou_per_class(self.confusion)

    @property
    def miou(self) -> float:
        return mean_iou(self.iou)

    def metrics(self) -> dict[str, Any]:
        """JSON-ready summary: frames, points, class names, per-class IoU (None = NaN), mIoU, latency
        statistics, the bird's-eye-view frame."""
        iou = self.iou
        has_labels = self.labelled_frames > 0
        names = self.classes.names
        bev = None
        if self.bev is not None:
            bev = {"labelled_frame": self.bev.labelled_frame, "name": self.bev.name, "miou": self.bev.miou,
                   "median_frame_miou": float(np.median(self.frame_miou)), "points": int(self.bev.xyz.shape[0])}
        return {
            "frames": self.frames,
            "labelled_frames": self.labelled_frames,
            "points": self.points,
            "evaluated_points": int(self.confusion[1:, :].sum()),
            "class_names": list(names),
            "miou": _json_float(self.miou) if has_labels else None,
            "iou": {names[c]: _json_float(v) for c, v in zip(range(1, len(names)), iou)} if has_labels else {},
            "confusion": self.confusion.tolist(),
            "latency": latency_stats(self.latency_ms),
            "stages_ms": {stage: latency_stats(v) for stage, v in self.stage_ms.items()},
            "bev": bev,
        }


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


