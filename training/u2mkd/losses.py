"""U2MKD loss functions (docs/reference.md §14): imputation, stage-feature and class-weighted logit distillation.

Each compares a prediction with a target of the same (M, C) shape, the target detached; each computes in
float32 at least (bf16 autocast promotes) and is 0, connected to the graph, on empty input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from elite_ros.labels import IGNORE_ID

FEATURE_EPS = 1e-8  # F.cosine_similarity's default: a zero vector has cosine 0 with anything


def imputation_loss(imputed: Tensor, image_features: Tensor) -> Tensor:
    """Mean squared error between imputed and real image features of the points with a pixel, (M, C) each;
    the real features are the target (detached): the imputation head learns to predict them, the image
    branch is not pulled towards what 3D features can predict."""
    if imputed.shape != image_features.shape:
        raise ValueError(f"imputation_loss: prediction {tuple(imputed.shape)} and target "
                         f"{tuple(image_features.shape)} must match")
    if imputed.numel() == 0:
        return imputed.sum().float()
    dtype = torch.promote_types(imputed.dtype, torch.float32)
    return (imputed.to(dtype) - image_features.detach().to(dtype)).pow(2).mean()


def feature_distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Cosine distance 1 - cos(student_v, teacher_v), averaged over one stage's voxels v, (M, C) each
    (student already projected to the teacher's width; teacher detached): in [0, 2], 1 for a student of
    zeros, blind to either side's scale, so stages and teachers of any feature scale weigh alike (a
    normalised MSE ||s - t||^2 / ||t||^2 reached thousands on a deep stage whose teacher features are small)."""
    if student.shape != teacher.shape:
        raise ValueError(f"feature_distillation_loss: prediction {tuple(student.shape)} and target "
                         f"{tuple(teacher.shape)} must match")
    if student.numel() == 0:
        return student.sum().float()
    dtype = torch.promote_types(student.dtype, torch.float32)
    cosine = F.cosine_similarity(student.to(dtype), teacher.detach().to(dtype), dim=1, eps=FEATURE_EPS)
    return (1.0 - cosine).mean()


def class_weighted_kl(student_logits: Tensor, teacher_logits: Tensor, class_weights: Tensor,
                      keep: Tensor | None = None) -> Tensor:
    """KL(teacher || student) per point, averaged with the class weight of the teacher's label as the
    point's weight: sum_i w_{t_i} KL_i / sum_i w_{t_i}, t_i = argmax of the teacher's logits of point i.

    student_logits, teacher_logits: (N, C); class_weights: (C,), the segmentation CE's (ref §6). With equal
    weights it is the plain mean KL per point ('batchmean'). The unweighted KL acts as a cross-entropy
    towards the teacher in which every point counts alike, so it dilutes the class weighting of the
    segmentation losses; weighting by the teacher's label keeps it on points without ground truth too.
    keep: optional (N,) bool, the points whose KL counts (the others weigh 0; none kept gives 0).
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"class_weighted_kl: student and teacher logits must be the same (N, C), got"
                         f" {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if class_weights.shape != student_logits.shape[1:]:
        raise ValueError(f"class_weighted_kl: class_weights must be ({student_logits.shape[1]},), got"
                         f" {tuple(class_weights.shape)}")
    if keep is not None and keep.shape != student_logits.shape[:1]:
        raise ValueError(f"class_weighted_kl: keep must be ({student_logits.shape[0]},), got {tuple(keep.shape)}")
    if student_logits.shape[0] == 0:
        return student_logits.sum().float()
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    teacher = teacher_logits.detach().to(dtype)
    per_point = F.kl_div(F.log_softmax(student_logits.to(dtype), dim=1), F.log_softmax(teacher, dim=1),
                         reduction="none", log_target=True).sum(dim=1)
    weights = class_weights.to(device=teacher.device, dtype=dtype)[teacher.argmax(dim=1)]
    if keep is not None:
        weights = weights * keep.to(dtype)
    return (weights * per_point).sum() / weights.sum().clamp_min(torch.finfo(dtype).tiny)


def teacher_right_or_unlabelled(teacher_logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_ID) -> Tensor:
    """(N,) bool: the points whose teacher label (argmax of (N, C) logits) is the ground truth, or that have
    none (`ignore_index`): where a KL towards the teacher never pulls against the segmentation CE."""
    if labels.shape != teacher_logits.shape[:1]:
        raise ValueError(f"teacher_right_or_unlabelled: labels {tuple(labels.shape)} for "
                         f"{teacher_logits.shape[0]} points")
    return (labels == ignore_index) | (teacher_logits.detach().argmax(dim=1) == labels)
