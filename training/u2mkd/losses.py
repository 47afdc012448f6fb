"""U2MKD loss functions (docs/reference.md §14): imputation and stage-feature distillation.

Both compute in float32 at least (bf16 autocast promotes) and are 0, connected to the graph, on empty
input.
"""
from __future__ import annotations

import torch
from torch import Tensor

FEATURE_EPS = 1e-6  # keeps the normalisation finite for an all-zero teacher stage


def imputation_loss(imputed: Tensor, image_features: Tensor) -> Tensor:
    """Mean squared error between imputed and real image features of the points with a pixel, (M, C) each;
    the real features are the target (detached): the imputation head learns to predict them, the image
    branch is not pulled towards what 3D features can predict."""
    if imputed.shape != image_features.shape:
        raise ValueError(f"imputation_loss: imputed {tuple(imputed.shape)} and image features "
                         f"{tuple(image_features.shape)} must match")
    dtype = torch.promote_types(imputed.dtype, torch.float32)
    if imputed.numel() == 0:
        return imputed.sum().to(dtype)
    return (imputed.to(dtype) - image_features.detach().to(dtype)).pow(2).mean()


def feature_distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Normalised MSE ||student - teacher||^2 / ||teacher||^2 of one stage's voxel features (M, C) each
    (student already projected to the teacher's width; teacher detached). Scale-free, so stages and
    teachers of any feature scale weigh alike; 1.0 for a student that outputs zeros."""
    if student.shape != teacher.shape:
        raise ValueError(f"feature_distillation_loss: student {tuple(student.shape)} and teacher "
                         f"{tuple(teacher.shape)} features must match")
    dtype = torch.promote_types(student.dtype, torch.float32)
    if student.numel() == 0:
        return student.sum().to(dtype)
    target = teacher.detach().to(dtype)
    return (student.to(dtype) - target).pow(2).sum() / (target.pow(2).sum() + FEATURE_EPS)
