"""`U2MKD`: the distillation terms of one step from the LiDAR teacher to the fusion student (ref §14).

terms = {"u2mkd_logits": w_logit KL(teacher || student) per point, averaged over every point with the
                          class weight of the teacher's label as its weight (`u2mkd_logit_class_weighted`)
                          or with equal weights ('batchmean'), `losses.class_weighted_kl`; with
                          `u2mkd_logit_teacher_right_only` only over the points whose teacher label is
                          the ground truth or that have none,
         "u2mkd_stage{k}": (w_feature / S) cosine distance between the student's stage-k voxel features,
                           projected to the teacher's width, and the teacher's (S = number of stages)}.

The student's logits are its final ones (with the image where it has one, on the imputation path
elsewhere), the teacher's those of the same points; both networks voxelise the same points on the same
grid, so stage k's voxels are the same rows in both. The projections (Linear(student, teacher) per
stage, identity-initialised when the widths agree) are trainable and training-only.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from elite_ros.student import StudentOutput
from elite_ros_training.ppmskd.config import LossConfig
from elite_ros_training.u2mkd.losses import class_weighted_kl, feature_distillation_loss, teacher_right_or_unlabelled


class U2MKD(nn.Module):
    """Stage projections + U2MKD terms: `forward(student, teacher, labels) -> {name: weighted scalar}`
    (labels: (Np,) ground truth of the points, ignore 0; needed by `u2mkd_logit_teacher_right_only`)."""

    def __init__(self, config: LossConfig, *, student_channels: int, teacher_channels: int, num_stages: int,
                 num_classes: int, class_weights: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        if not config.u2mkd_logit_class_weighted:
            class_weights = torch.ones(num_classes)  # the plain KL: every point counts alike
        elif class_weights is None or class_weights.shape != (num_classes,):
            raise ValueError(f"U2MKD: u2mkd_logit_class_weighted needs class_weights of shape ({num_classes},)")
        self.register_buffer("logit_weights", class_weights.float().clone(), persistent=False)
        self.projections = nn.ModuleList([nn.Linear(student_channels, teacher_channels) for _ in range(num_stages)])
        if student_channels == teacher_channels:
            for projection in self.projections:
                nn.init.eye_(projection.weight)
                nn.init.zeros_(projection.bias)

    def forward(self, student: StudentOutput, teacher: StudentOutput,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        if student.logits.shape != teacher.logits.shape:
            raise ValueError(f"U2MKD: student logits {tuple(student.logits.shape)} and teacher logits "
                             f"{tuple(teacher.logits.shape)} must match (same points, same classes)")
        if len(student.stages) != len(self.projections) or len(teacher.stages) != len(self.projections):
            raise ValueError(f"U2MKD: {len(student.stages)} student and {len(teacher.stages)} teacher stages, "
                             f"expected {len(self.projections)}")
        keep = None
        if self.config.u2mkd_logit_teacher_right_only:
            if labels is None:
                raise ValueError("U2MKD: u2mkd_logit_teacher_right_only needs the points' labels")
            keep = teacher_right_or_unlabelled(teacher.logits, labels)
        terms = {"u2mkd_logits": self.config.u2mkd_logit_weight
                 * class_weighted_kl(student.logits, teacher.logits, self.logit_weights, keep)}
        weight = self.config.u2mkd_feature_weight / len(self.projections)
        for k, (projection, ours, theirs) in enumerate(zip(self.projections, student.stages, teacher.stages)):
            if ours.voxel_features.shape[0] != theirs.voxel_features.shape[0] or ours.scale != theirs.scale:
                raise ValueError(f"U2MKD: stage {k}: {ours.voxel_features.shape[0]} student voxels at scale "
                                 f"{ours.scale}, {theirs.voxel_features.shape[0]} teacher voxels at scale "
                                 f"{theirs.scale}")
            projected = projection(ours.voxel_features.to(projection.weight.dtype))
            terms[f"u2mkd_stage{k}"] = weight * feature_distillation_loss(projected, theirs.voxel_features)
        return terms
