"""What the report's bird's-eye view of one frame shows (as the ELiTe paper's Fig. 6); `report` draws it.

Three panels, top-down in the sensor frame: the ground truth and the prediction in the model's palette
(`labels.ClassTable`: the checkpoint's, SemanticKITTI's by default), and the errors: the points the metric
counts as wrong (`metrics.error_mask`) in red over the correct ones in grey; points that the metric
ignores (ground truth or prediction 0) in a lighter grey. Only points within +-BEV_EXTENT_M in x and y are
kept and shown. `elite_ros.evaluate.Evaluation` keeps one such frame, never all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elite_ros.cloud import Scan
from elite_ros.labels import IGNORE_ID, ClassTable
from elite_ros.metrics import error_mask

BEV_EXTENT_M = 50.0  # half-width of the view, metres: the default grid's x/y range (docs/reference.md §2 step 1)
ERROR_RGB = (255, 0, 0)  # the wrong points
CORRECT_RGB = (160, 160, 160)  # evaluated and right
IGNORED_RGB = (225, 225, 225)  # ground truth or prediction is the ignored class: not scored


@dataclass
class BevFrame:
    """One frame kept for the bird's-eye view.

    xyz: (M, 3) float32 metres, sensor frame, finite, |x| and |y| <= BEV_EXTENT_M. ground_truth,
    prediction: (M,) uint8 training ids. miou: the frame's own mIoU (0..1). labelled_frame: its position
    among the run's labelled frames (0-based). name: where it came from (e.g. topic and stamp), or "".
    """

    xyz: np.ndarray
    ground_truth: np.ndarray
    prediction: np.ndarray
    miou: float
    labelled_frame: int
    name: str = ""

    @classmethod
    def from_scan(cls, scan: Scan, ground_truth: np.ndarray, prediction: np.ndarray, *, miou: float,
                  labelled_frame: int, name: str = "", extent_m: float = BEV_EXTENT_M) -> BevFrame:
        """The in-view points of `scan` (``xyz`` (K, 3), ``index`` (K,) message positions) with their labels
        from the per-message-point `ground_truth` and `prediction` ((num_points,) training ids); copies."""
        xyz = np.asarray(scan.xyz, dtype=np.float32)
        index = np.asarray(scan.index, dtype=np.int64)
        inside = np.isfinite(xyz).all(axis=1) & (np.abs(xyz[:, :2]) <= extent_m).all(axis=1)
        rows = index[inside]
        return cls(xyz=xyz[inside].copy(), ground_truth=np.asarray(ground_truth)[rows].astype(np.uint8),
                   prediction=np.asarray(prediction)[rows].astype(np.uint8), miou=float(miou),
                   labelled_frame=int(labelled_frame), name=name)


@dataclass
class BevPanel:
    """One panel: title, xy (K, 2) float32 metres (x forward, y left) and rgb (K, 3) uint8, in drawing order."""

    title: str
    xy: np.ndarray
    rgb: np.ndarray


def bev_panels(frame: BevFrame, classes: ClassTable) -> list[BevPanel]:
    """Ground truth, prediction and errors of `frame` (errors drawn last, on top of the grey points)."""
    xy = frame.xyz[:, :2]
    wrong = error_mask(frame.ground_truth, frame.prediction)
    ignored = (frame.ground_truth == IGNORE_ID) | (frame.prediction == IGNORE_ID)
    colours = np.empty((xy.shape[0], 3), dtype=np.uint8)
    colours[:] = CORRECT_RGB
    colours[ignored] = IGNORED_RGB
    colours[wrong] = ERROR_RGB
    order = np.concatenate([np.flatnonzero(ignored), np.flatnonzero(~ignored & ~wrong), np.flatnonzero(wrong)])
    scored = int((~ignored).sum())
    return [
        BevPanel("ground truth", xy, classes.palette[frame.ground_truth]),
        BevPanel("prediction", xy, classes.palette[frame.prediction]),
        BevPanel(f"errors in red: {int(wrong.sum()):,} of {scored:,} scored points", xy[order], colours[order]),
    ]
