"""Targets of the PPMSKD stage losses: voxel labels for the 3D heads (docs/reference.md §6 item 2)."""
from __future__ import annotations

import torch
from torch import Tensor


def voxel_majority_labels(labels: Tensor, point_to_voxel: Tensor, num_voxels: int, num_classes: int) -> Tensor:
    """(M,) int64: the most frequent label of the points in each voxel.

    labels: (Np,) int64 training ids in [0, num_classes); point_to_voxel: (Np,) int64 voxel of each point
    in [0, num_voxels). The ignore label 0 takes part in the vote like any class (as in the reference), so
    a voxel of mostly unlabelled points is ignored by the stage loss; ties go to the lowest class id; a
    voxel without points gets 0.
    """
    if labels.ndim != 1 or point_to_voxel.shape != labels.shape:
        raise ValueError(f"voxel_majority_labels: labels and point_to_voxel must be the same (Np,), got"
                         f" {tuple(labels.shape)} and {tuple(point_to_voxel.shape)}")
    if num_voxels < 0 or num_classes < 1:
        raise ValueError(f"voxel_majority_labels: num_voxels {num_voxels} / num_classes {num_classes} invalid")
    labels = labels.long()
    point_to_voxel = point_to_voxel.long()
    if labels.numel():
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"voxel_majority_labels: labels must lie in [0, {num_classes}),"
                             f" got [{int(labels.min())}, {int(labels.max())}]")
        if point_to_voxel.min() < 0 or point_to_voxel.max() >= num_voxels:
            raise ValueError(f"voxel_majority_labels: point_to_voxel must lie in [0, {num_voxels}),"
                             f" got [{int(point_to_voxel.min())}, {int(point_to_voxel.max())}]")
    votes = torch.bincount(point_to_voxel * num_classes + labels, minlength=num_voxels * num_classes)
    # torch.argmax returns the first maximal index: ties -> the lowest class id; no vote -> 0
    return votes.view(num_voxels, num_classes).argmax(dim=1)
