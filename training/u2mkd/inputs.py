"""A training `Batch` -> the fusion student's `FusionInput` (docs/reference.md §14)."""
from __future__ import annotations

import torch

from elite_ros.fusion import FusionInput
from elite_ros.voxel import MultiScaleVoxels
from elite_ros_training.data.collate import Batch


def fusion_input(batch: Batch, voxels: MultiScaleVoxels, *, with_images: bool = True) -> FusionInput:
    """The batch's points, voxels, crops and pixel links; `with_images=False` withholds every image (the
    imputation path for the whole batch, e.g. the validation without images). Images withheld by the
    pipeline's modality dropout are marked in `image_present`."""
    if not with_images or batch.images is None:
        return FusionInput(points=batch.points, voxels=voxels)
    pixel_points = batch.point_to_pixel_global().to(batch.points.device)
    pixels = (torch.cat(list(batch.pixels)) if batch.pixels else torch.zeros((0, 2), dtype=torch.int64))
    return FusionInput(points=batch.points, voxels=voxels, images=batch.images, image_present=batch.image_present,
                       pixel_points=pixel_points, pixels=pixels.to(batch.points.device))
