"""Group equal keys and reduce rows per group (segment mean / max): the voxeliser's and the heads' sorting core.

- `sorted_groups`: equal int64 keys grouped with one stable sort (torch.unique's groups plus the sort);
- `first_offsets`: the start of each of consecutive groups, from their sizes;
- `scatter_mean` / `scatter_max`: per-segment mean (differentiable, one fused `embedding_bag` for 2-D
  values) and maximum of the rows of a tensor.

Plain torch, no ROS import.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_INT32_KEYS = 1 << 31  # keys below this sort as int32: ~1.7x faster than int64 on the CPU (measured)


def sorted_groups(key: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Group equal int64 keys (N,) with one stable sort.

    Returns (unique keys (M,) ascending, inverse (N,) group of each element, counts (M,), order (N,)
    elements sorted by group, offsets (M,) first position of each group in `order`). Same groups as
    ``torch.unique(key, return_inverse=True, return_counts=True)``, plus the sort it used. Non-negative
    keys below 2^31 are sorted as int32.
    """
    count = key.shape[0]
    sort_key = key
    if count and key.device.type == "cpu":
        low, high = torch.aminmax(key)
        if int(low) >= 0 and int(high) < _INT32_KEYS:
            sort_key = key.to(torch.int32)
    sorted_key, order = torch.sort(sort_key, stable=True)
    is_start = torch.ones(count, dtype=torch.bool, device=key.device)
    if count > 1:
        is_start[1:] = sorted_key[1:] != sorted_key[:-1]
    offsets = torch.nonzero(is_start, as_tuple=False).flatten()
    group = torch.cumsum(is_start, dim=0) - 1
    inverse = torch.empty_like(group)
    inverse[order] = group
    ends = torch.cat([offsets[1:], offsets.new_tensor([count])])
    return sorted_key[offsets].to(key.dtype), inverse, ends - offsets, order, offsets


def first_offsets(counts: Tensor) -> Tensor:
    """(M,) counts of consecutive groups -> (M,) start of each group."""
    offsets = torch.zeros_like(counts)
    if counts.shape[0] > 1:
        offsets[1:] = torch.cumsum(counts[:-1], dim=0)
    return offsets


def scatter_mean(values: Tensor, index: Tensor, num_segments: int, counts: Tensor | None = None) -> Tensor:
    """Mean of the rows of `values` (N, C) that share an index (N,) in [0, num_segments) -> (num_segments, C).

    Empty segments get 0. `counts` (num_segments,) may be passed when known (e.g. ScaleVoxels.counts).
    Differentiable. 2-D values go through one stable sort + a fused `embedding_bag` (several times faster
    than `index_add_` on the CPU); other shapes use `index_add_`.
    """
    if counts is None:
        counts = torch.bincount(index, minlength=num_segments)
    if values.ndim == 2 and values.is_floating_point() and num_segments > 0:
        order = torch.argsort(index, stable=True)
        return F.embedding_bag(order, values, first_offsets(counts), mode="mean")
    out = values.new_zeros((num_segments,) + tuple(values.shape[1:]))
    out.index_add_(0, index, values)
    divisor = counts.clamp_min(1).to(values.dtype)
    return out / divisor.view((-1,) + (1,) * (values.ndim - 1))


def scatter_max(values: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Row-wise maximum per segment (N, C) -> (num_segments, C); empty segments get 0."""
    shape = (num_segments,) + tuple(values.shape[1:])
    out = values.new_zeros(shape)
    expanded = index.view((-1,) + (1,) * (values.ndim - 1)).expand_as(values)
    return out.scatter_reduce(0, expanded, values, reduce="amax", include_self=False)
