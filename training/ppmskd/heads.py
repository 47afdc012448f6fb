"""The trainable PPMSKD heads (docs/reference.md §4): per-stage 3D and 2D classifiers, 2D multi-stage classifier.

Parameter counts for the paper's sizes (student 64 channels, teacher Ct = 96, 20 classes, 4 stages):
3D heads 4 x 10,900 = 43,600; 2D heads 4 x 22,484 = 89,936; multi-stage classifier 77,780.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

HEAD_3D_HIDDEN = 128  # docs/reference.md §4: student stage head Linear(64, 128) -> ReLU -> Linear(128, 20)
HEAD_2D_EXPANSION = 2  # docs/reference.md §4: teacher stage head Linear(96, 192) -> ReLU -> Linear(192, 20)


def mlp_head(in_channels: int, hidden_channels: int, num_classes: int) -> nn.Sequential:
    """Linear(in, hidden) -> ReLU -> Linear(hidden, num_classes), applied to the last dimension."""
    return nn.Sequential(nn.Linear(in_channels, hidden_channels), nn.ReLU(), nn.Linear(hidden_channels, num_classes))


def stage_head_3d(student_channels: int, num_classes: int) -> nn.Sequential:
    """Head on one student stage's voxel features (M, student_channels) -> (M, num_classes) logits."""
    return mlp_head(student_channels, HEAD_3D_HIDDEN, num_classes)


def stage_head_2d(teacher_channels: int, num_classes: int) -> nn.Sequential:
    """Head on one teacher stage's features (..., Ct) -> (..., num_classes) logits."""
    return mlp_head(teacher_channels, HEAD_2D_EXPANSION * teacher_channels, num_classes)


class MultiStageClassifier(nn.Module):
    """The 2D classifier on the concatenated teacher features of all stages (docs/reference.md §4).

    Linear(S x Ct, 2 Ct) -> ReLU -> Linear(2 Ct, num_classes). The first Linear over a concatenation is
    applied as the sum of its column blocks over the parts (the same function and parameters), so the
    (pixels, S x Ct) concatenation is never built on the dense pseudo-label path.
    """

    def __init__(self, teacher_channels: int, num_stages: int, num_classes: int) -> None:
        super().__init__()
        self.teacher_channels = teacher_channels
        self.num_stages = num_stages
        hidden = HEAD_2D_EXPANSION * teacher_channels
        self.layers = mlp_head(num_stages * teacher_channels, hidden, num_classes)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """features: per stage (..., Ct), all with the same leading shape -> (..., num_classes) logits."""
        if len(features) != self.num_stages:
            raise ValueError(f"MultiStageClassifier: {len(features)} stages of features, expected {self.num_stages}")
        first: nn.Linear = self.layers[0]  # type: ignore[assignment]
        ct = self.teacher_channels
        hidden: Tensor = first.bias
        for index, part in enumerate(features):
            hidden = hidden + F.linear(part, first.weight[:, index * ct:(index + 1) * ct])
        return self.layers[2](self.layers[1](hidden))
