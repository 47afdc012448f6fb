"""The point cap (`Segmenter(max_points=...)`): which points run the network, and labels for the rest.

- `subsample`: a deterministic choice of `cap` rows: first one point per 0.1 m voxel (the lowest index
  of each), then a seeded random choice among the others;
- `spread`: logits for every point from the sampled ones: the mean logits of the sampled points of its
  0.1 m voxel, else of its voxel at the next coarser scale (0.2, 0.4, 0.8, ... m, doubling until one cell
  spans the volume), i.e. of its nearest sampled points by voxel.

No ROS import; the voxel grid is `elite_ros.voxel`'s.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .segments import scatter_mean, sorted_groups
from .voxel import VoxelConfig, cell_keys

SUBSAMPLE_SEED = 0  # the same scan always keeps the same points


def subsample(xyz: Tensor, cap: int, config: VoxelConfig) -> Tensor:
    """(cap,) int64 sorted rows of `xyz` ((N, 3) metres, N > cap): one point per 0.1 m voxel first."""
    _, _, _, order, offsets = sorted_groups(cell_keys(xyz, config, 1))
    first = order[offsets]  # the stable sort puts each voxel's lowest row first; voxels in key order
    rows = torch.arange(xyz.shape[0], device=xyz.device)
    generator = torch.Generator(device="cpu").manual_seed(SUBSAMPLE_SEED)
    if first.shape[0] >= cap:
        choice = first[torch.randperm(first.shape[0], generator=generator)[:cap].to(xyz.device)]
    else:
        is_first = torch.zeros(xyz.shape[0], dtype=torch.bool, device=xyz.device)
        is_first[first] = True
        others = rows[~is_first]
        extra = others[torch.randperm(others.shape[0], generator=generator)[:cap - first.shape[0]].to(xyz.device)]
        choice = torch.cat([first, extra])
    return torch.sort(choice).values


def spread(xyz: Tensor, sampled: Tensor, sampled_logits: Tensor, config: VoxelConfig) -> tuple[Tensor, Tensor]:
    """Logits for every point of `xyz` ((K, 3) metres) from those of its `sampled` rows ((S,) int64,
    logits (S, C)): the mean over the finest voxel it shares with a sampled point.

    Returns (logits (K, C), known (K,) bool); every point is known as long as one point was sampled.
    """
    logits = torch.zeros((xyz.shape[0], sampled_logits.shape[1]), device=xyz.device)
    known = torch.zeros(xyz.shape[0], dtype=torch.bool, device=xyz.device)
    logits[sampled] = sampled_logits
    known[sampled] = True
    for scale in doubling_scales(config):
        missing = torch.nonzero(~known).flatten()
        if missing.numel() == 0:
            break
        key = cell_keys(xyz, config, scale)
        unique_key, inverse, counts, _, _ = sorted_groups(key[sampled])
        means = scatter_mean(sampled_logits, inverse, unique_key.shape[0], counts)
        position = torch.searchsorted(unique_key, key[missing]).clamp_max(unique_key.shape[0] - 1)
        found = unique_key[position] == key[missing]
        logits[missing[found]] = means[position[found]]
        known[missing[found]] = True
    return logits, known


def doubling_scales(config: VoxelConfig) -> list[int]:
    """Voxel scales 1, 2, 4, ... up to the first whose grid is a single cell."""
    scales = [1]
    while max(config.cells(scales[-1])) > 1:
        scales.append(scales[-1] * 2)
    return scales
