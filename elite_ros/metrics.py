"""ELiTe's segmentation metric: one confusion matrix and IoU for evaluation reports and training.

The metric is the reference's (docs/reference.md §8): a C x C confusion histogram over training ids
(rows = ground truth, columns = prediction) accumulated over a whole split; the row and column of the
ignored class 0 are dropped; IoU_c = TP / (TP + FP + FN) on the cropped matrix; mIoU = the mean over the
classes whose IoU is defined (a class absent from both ground truth and prediction has IoU NaN and does
not count). Points predicted as class 0 are neither FP nor FN for any class, as in the reference.

Under data-parallel training every process accumulates its own histogram and the histograms are
**summed** across processes (`sum_across_processes`) before IoU is computed: averaging per-process IoUs
would weight small shards like large ones (the official code does not synchronise at all, §10 item 10).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from elite_ros.labels import IGNORE_ID, NUM_CLASSES


def confusion_matrix(ground_truth, prediction, num_classes: int = NUM_CLASSES):
    """(C, C) int64 histogram, rows = ground-truth training id, columns = predicted training id.

    ground_truth, prediction: (N,) integer training ids in 0..C-1, both numpy arrays (-> numpy result)
    or both torch tensors (-> torch result on their device, no host copy).
    """
    if isinstance(ground_truth, torch.Tensor) or isinstance(prediction, torch.Tensor):
        gt_t = torch.as_tensor(ground_truth).reshape(-1).long()
        pred_t = torch.as_tensor(prediction, device=gt_t.device).reshape(-1).long()
        _check_ids(gt_t.shape[0], pred_t.shape[0], gt_t, pred_t, num_classes)
        return torch.bincount(gt_t * num_classes + pred_t, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    gt = np.asarray(ground_truth).astype(np.int64).ravel()
    pred = np.asarray(prediction).astype(np.int64).ravel()
    _check_ids(gt.size, pred.size, gt, pred, num_classes)
    return np.bincount(gt * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _check_ids(gt_count: int, pred_count: int, gt, pred, num_classes: int) -> None:
    if gt_count != pred_count:
        raise ValueError(f"ground truth has {gt_count} points but the prediction {pred_count}")
    for name, ids in (("ground truth", gt), ("prediction", pred)):
        if gt_count and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
            raise ValueError(f"{name} ids must lie in 0..{num_classes - 1}, got {int(ids.min())}..{int(ids.max())}")


def error_mask(ground_truth: np.ndarray, prediction: np.ndarray, ignore_id: int = IGNORE_ID) -> np.ndarray:
    """(N,) bool: the points the metric counts as errors, i.e. the off-diagonal of the cropped confusion
    matrix: ground truth and prediction both other than `ignore_id`, and different (ref §8: a point
    predicted as the ignored class is neither a false positive nor a false negative)."""
    gt, pred = np.asarray(ground_truth).ravel(), np.asarray(prediction).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} points but the prediction {pred.size}")
    return (gt != ignore_id) & (pred != ignore_id) & (gt != pred)


def iou_per_class(confusion, ignore_id: int = IGNORE_ID) -> np.ndarray:
    """(C-1,) float64 IoU of every class but `ignore_id`; NaN where TP + FP + FN = 0.

    confusion: (C, C) numpy array or torch tensor (rows = ground truth).
    """
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().numpy()
    confusion = np.asarray(confusion)
    keep = [c for c in range(confusion.shape[0]) if c != ignore_id]
    cropped = confusion[np.ix_(keep, keep)].astype(np.float64)
    tp = np.diag(cropped)
    fp = cropped.sum(axis=0) - tp
    fn = cropped.sum(axis=1) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(iou: np.ndarray) -> float:
    """nanmean of per-class IoU; NaN when no class occurs at all."""
    iou = np.asarray(iou, dtype=np.float64)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan


def sum_across_processes(confusion: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of every process's histogram (all-reduce), or `confusion` itself when
    torch.distributed is not running. All processes must call it (a collective)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return confusion
    total = confusion.clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return total
