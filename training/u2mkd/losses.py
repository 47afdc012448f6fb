"""U2MKD loss functions (docs/reference.md §14): imputation and stage-feature distillation.

Both compare a prediction with a target of the same (M, C) shape, the target detached; both compute in
float32 at least (bf16 autocast promotes) and are 0, connected to the graph, on empty input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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
