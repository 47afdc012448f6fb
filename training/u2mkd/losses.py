"""U2MKD loss functions (docs/reference.md §14): imputation and stage-feature distillation.

Both compare a prediction with a target of the same (M, C) shape, the target detached; both compute in
float32 at least (bf16 autocast promotes) and are 0, connected to the graph, on empty input.
"""
from __future__ import annotations

import torch
from torch import Tensor

FEATURE_EPS = 1e-6  # keeps the normalisation finite for an all-zero teacher stage


def _squared_errors(name: str, prediction: Tensor, target: Tensor) -> Tensor | None:
    """(prediction - detached target)^2 in at least float32, or None for empty input; shapes must agree."""
    if prediction.shape != target.shape:
        raise ValueError(f"{name}: prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must match")
    if prediction.numel() == 0:
        return None
    dtype = torch.promote_types(prediction.dtype, torch.float32)
    return (prediction.to(dtype) - target.detach().to(dtype)).pow(2)


def imputation_loss(imputed: Tensor, image_features: Tensor) -> Tensor:
    """Mean squared error between imputed and real image features of the points with a pixel, (M, C) each;
    the real features are the target (detached): the imputation head learns to predict them, the image
    branch is not pulled towards what 3D features can predict."""
    errors = _squared_errors("imputation_loss", imputed, image_features)
    return imputed.sum().float() if errors is None else errors.mean()


def feature_distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Normalised MSE ||student - teacher||^2 / ||teacher||^2 of one stage's voxel features (M, C) each
    (student already projected to the teacher's width; teacher detached). Scale-free, so stages and
    teachers of any feature scale weigh alike; 1.0 for a student that outputs zeros."""
    errors = _squared_errors("feature_distillation_loss", student, teacher)
    if errors is None:
        return student.sum().float()
    return errors.sum() / (teacher.detach().to(errors.dtype).pow(2).sum() + FEATURE_EPS)
