"""What SAM's image encoder takes, and ELiTe's crop of the camera image: one home for the data pipeline and
the teacher ("ref §N" = docs/reference.md §N).

SAM normalises 0..255 RGB with its pixel mean and std (no division by 255) and embeds a square input of
SAM_INPUT_SIZE pixels; ELiTe feeds it the bottom CROP_SIZE window of the KITTI image, zero-padded.
"""
from __future__ import annotations

import torch

from elite_ros.camera import PIXEL_MEAN, PIXEL_STD

#: RGB on 0..255, no /255 (ref §1 image_normalizer); the runtime's camera module is their one home (the fusion
#: student's default normalisation)
SAM_PIXEL_MEAN = PIXEL_MEAN
SAM_PIXEL_STD = PIXEL_STD
SAM_INPUT_SIZE = 1024  # pixels per side of SAM's image encoder input; crops are zero-padded to it (ref §2 step 9)
CROP_SIZE = (1024, 320)  # (width, height) of the bottom crop, pixels (ref §1 bottom_crop, §2 step 6)


def normalize_image(image: torch.Tensor, mean: tuple[float, float, float] = SAM_PIXEL_MEAN,
                    std: tuple[float, float, float] = SAM_PIXEL_STD) -> torch.Tensor:
    """(..., 3, H, W) RGB on 0..255 (uint8 or float; one image or a batch) -> float32 (value - mean) / std,
    on the image's device (SAM's normalisation, ref §2 step 9)."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=image.device).view(3, 1, 1)
    return (image.float() - mean_t) / std_t
