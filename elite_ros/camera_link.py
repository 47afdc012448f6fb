"""A scan's points linked to its camera image, for the fusion student (no ROS import).

- `link_image`: checks the image against its `CameraModel`, projects the points the network sees
  (`camera.project`, docs/reference.md §2 step 3) and normalises the image on the device: an `ImageLink`;
- `camera_batch`: the `FusionInput` camera fields for a network batch of scans x TTA votes
  (sample = scan * votes + vote): the images zero-padded to a common size, which samples have one, and
  every vote's point -> pixel links.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .camera import CameraInput, CameraModel, normalise_image


@dataclass
class ImageLink:
    """One scan's image and the network points that see it."""

    image: Tensor  # (3, H, W) float32 normalised image on the device
    rows: Tensor  # (M,) int64 rows of the network's points (after the point cap) with a pixel
    pixels: Tensor  # (M, 2) int64 (row, col) of those points


def link_image(xyz: np.ndarray, image: np.ndarray, camera: CameraModel | None, camera_input: CameraInput,
               device: torch.device, sampled: Tensor | None, name: str) -> ImageLink:
    """Link the points `xyz` ((K, 3) metres, in range) to `image` ((H, W, 3) uint8 RGB) seen by `camera`.

    sampled: the (S,) sorted rows that run the network under a point cap (None = all); the link's rows are
    rows of that subset. `name` ("scan 3") starts every error (ValueError) about the input.
    """
    if camera is None:
        raise ValueError(f"{name}: an image needs its camera (elite_ros.camera.CameraModel)")
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{name}: image must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[:2] != (camera.height, camera.width):
        raise ValueError(f"{name}: image is {rgb.shape[1]}x{rgb.shape[0]}, its camera {camera.width}x{camera.height}")
    projection = camera.project(xyz)
    rows = torch.from_numpy(projection.index).to(device)
    pixels = torch.from_numpy(projection.pixels).to(device)
    if sampled is not None:  # rows of the sampled points (sorted) that have a pixel
        found = torch.searchsorted(sampled, rows).clamp_max(sampled.shape[0] - 1)
        hit = sampled.index_select(0, found) == rows
        rows, pixels = found[hit], pixels[hit]
    normalised = normalise_image(rgb, camera_input.pixel_mean, camera_input.pixel_std, device)
    return ImageLink(image=normalised, rows=rows, pixels=pixels)


def camera_batch(links: Sequence[ImageLink | None], counts: Sequence[int], votes: int,
                 device: torch.device) -> dict[str, Tensor]:
    """FusionInput's camera fields for scans with `links` (None: no image) and `counts` network points per
    vote; {} when no scan has an image (every point takes the imputation path)."""
    present_links = [link for link in links if link is not None]
    if not present_links:
        return {}
    height = max(int(link.image.shape[1]) for link in present_links)
    width = max(int(link.image.shape[2]) for link in present_links)
    images = torch.zeros((len(links) * votes, 3, height, width), dtype=torch.float32, device=device)
    present = torch.zeros(len(links) * votes, dtype=torch.bool, device=device)
    rows, pixels = [], []
    offset = 0
    for scan_number, (link, count) in enumerate(zip(links, counts)):
        for vote in range(votes):
            sample = scan_number * votes + vote
            if link is not None:
                images[sample, :, :link.image.shape[1], :link.image.shape[2]] = link.image
                present[sample] = True
                rows.append(link.rows + offset)
                pixels.append(link.pixels)
            offset += count
    return {"images": images, "image_present": present, "pixel_points": torch.cat(rows), "pixels": torch.cat(pixels)}
