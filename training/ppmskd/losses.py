"""The PPMSKD loss functions: weighted cross-entropy, Lovasz-softmax and the KD divergence.

Each is safe on empty input (no labelled row, no row at all): it returns 0 connected to the graph of
its input, never NaN, and none of them synchronises with the device to find that out.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from elite_ros.labels import IGNORE_ID

LovaszClasses = Literal["present", "all"] | Sequence[int]


def _loss_dtype(tensor: Tensor) -> torch.dtype:
    """At least float32 (half-precision logits are promoted), float64 stays float64."""
    return torch.promote_types(tensor.dtype, torch.float32)


def cross_entropy(logits: Tensor, labels: Tensor, class_weights: Tensor | None = None,
                  ignore_index: int = IGNORE_ID) -> Tensor:
    """Class-weighted mean cross-entropy, PyTorch's definition: sum_i w_{y_i} l_i / sum_i w_{y_i}.

    logits: (N, C); labels: (N,) int64 class ids; class_weights: (C,) or None (all 1). Rows labelled
    `ignore_index` take no part. With no labelled row the result is 0 (PyTorch's own mean gives NaN).
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy: logits (N, C) and labels (N,), got {tuple(logits.shape)} and"
                         f" {tuple(labels.shape)}")
    logits = logits.to(_loss_dtype(logits))
    weights = None if class_weights is None else class_weights.to(device=logits.device, dtype=logits.dtype)
    total = F.cross_entropy(logits, labels, weight=weights, ignore_index=ignore_index, reduction="sum")
    valid = labels != ignore_index
    if weights is None:
        denominator = valid.sum().to(logits.dtype)
    else:
        denominator = (weights[labels.clamp(0, logits.shape[1] - 1)] * valid).sum()
    return total / denominator.clamp_min(torch.finfo(logits.dtype).tiny)


def lovasz_softmax(probabilities: Tensor, labels: Tensor, ignore_index: int | None = IGNORE_ID,
                   classes: LovaszClasses = "present") -> Tensor:
    """Lovasz-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018), over all rows (per_image=False).

    probabilities: (N, C) class probabilities (a softmax); labels: (N,) int64. For each class c the
    errors m_i = |[y_i = c] - p_ic| of the labelled rows are sorted in decreasing order and the loss is
    the Lovasz extension of the Jaccard loss Delta_c(S) = |S| / |{y = c} u S| at m: sum_i m_(i) g_i with
    g_i = Delta_c(S_i) - Delta_c(S_{i-1}), S_i the i largest errors (the paper's Eq. 8-9, Algorithm 1).
    The result is the mean over the selected classes: "present" (classes that label at least one row),
    "all" (every class) or an explicit list of class ids. Rows labelled `ignore_index` are ignored.
    No selected class (e.g. no labelled row): 0.
    """
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
        raise ValueError(f"lovasz_softmax: probabilities (N, C) and labels (N,), got"
                         f" {tuple(probabilities.shape)} and {tuple(labels.shape)}")
    num_classes = probabilities.shape[1]
    probs = probabilities.to(_loss_dtype(probabilities))
    class_ids = torch.arange(num_classes, device=labels.device)
    foreground = labels[:, None] == class_ids[None, :]  # (N, C)
    if ignore_index is not None:
        valid = labels != ignore_index
        foreground &= valid[:, None]
    fg = foreground.to(probs.dtype)
    errors = (fg - probs).abs()
    if ignore_index is not None:
        # An ignored row gets error 0 instead of being removed (which would synchronise with the device):
        # sorted in decreasing order, every row with a positive error precedes it, so the prefix sets of
        # every positive error are the same as without it, and a zero error adds 0 whatever its g_i.
        errors = errors * valid[:, None].to(probs.dtype)
    errors_sorted, order = errors.sort(dim=0, descending=True)
    fg_sorted = fg.gather(0, order)
    per_class = (errors_sorted * _jaccard_increments(fg_sorted)).sum(dim=0)  # (C,)

    if classes == "present":
        selected = foreground.any(dim=0)
    elif classes == "all":
        selected = torch.ones(num_classes, dtype=torch.bool, device=labels.device)
    elif isinstance(classes, str):
        raise ValueError(f"lovasz_softmax: classes must be 'present', 'all' or a list of ids, got {classes!r}")
    else:
        selected = torch.zeros(num_classes, dtype=torch.bool, device=labels.device)
        selected[torch.as_tensor(list(classes), dtype=torch.int64, device=labels.device)] = True
    weight = selected.to(probs.dtype)
    return (per_class * weight).sum() / weight.sum().clamp_min(1.0)


def _jaccard_increments(fg_sorted: Tensor) -> Tensor:
    """(N, C) g_i = Delta(S_i) - Delta(S_{i-1}) for each column, rows in the order of decreasing error.

    With S_i the first i rows: |S_i| / |fg u S_i| = 1 - |fg minus S_i| / |fg u S_i|, where
    |fg minus S_i| = |fg| - (fg rows among the first i) and |fg u S_i| = |fg| + (other rows among the
    first i) >= 1.
    """
    fg_total = fg_sorted.sum(dim=0, keepdim=True)
    intersection = fg_total - fg_sorted.cumsum(dim=0)
    union = fg_total + (1.0 - fg_sorted).cumsum(dim=0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)


def segmentation_loss(logits: Tensor, labels: Tensor, class_weights: Tensor | None, lovasz_weight: float,
                      ignore_index: int = IGNORE_ID) -> tuple[Tensor, Tensor]:
    """(weighted CE, lovasz_weight x Lovasz-softmax on the softmax over all C channels) of (N, C) logits."""
    ce = cross_entropy(logits, labels, class_weights, ignore_index)
    lovasz = lovasz_softmax(F.softmax(logits.to(_loss_dtype(logits)), dim=1), labels, ignore_index)
    return ce, lovasz_weight * lovasz


def kd_divergence(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(teacher || student) at temperature 1 with reduction 'mean' (docs/reference.md §6).

    Both (N, C) logits; the teacher side is detached here. Equals
    `F.kl_div(log_softmax(student), softmax(teacher), reduction="mean")`, i.e. the sum over all N x C
    entries divided by N x C (not 'batchmean', which divides by N only). N = 0 gives 0.
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"kd_divergence: student and teacher logits must be the same (N, C), got"
                         f" {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    dtype = _loss_dtype(student_logits)
    log_student = F.log_softmax(student_logits.to(dtype), dim=1)
    teacher = F.softmax(teacher_logits.detach().to(dtype), dim=1)
    return F.kl_div(log_student, teacher, reduction="sum") / max(student_logits.numel(), 1)
