"""Native kernel maps for submanifold sparse convolution: who feeds whom, per kernel offset.

A kernel map lists, for each of the K^3 offsets of a K x K x K kernel, the pairs (input row, output row)
with ``coord(input) = coord(output) + offset``. Offsets are in cross-correlation order (no flip), the order
spconv uses: offset index ``k = (kz * K + ky) * K + kx`` is the displacement ``(kz - K//2, ky - K//2,
kx - K//2)`` in (z, y, x) voxels, and it multiplies weight ``[:, kz, ky, kx, :]`` of the canonical
``(out, kz, ky, kx, in)`` layout.

For a submanifold convolution the output sites are the input sites, so the map is symmetric: the pairs of
offset ``k`` are those of its mirror ``K^3 - 1 - k`` with the roles swapped. Only the first half is
searched; the centre offset is the identity and is not stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .keys import coords_key


@dataclass(frozen=True)
class KernelMap:
    """Neighbour pairs of one grid for one odd kernel size.

    ``in_index[k]`` / ``out_index[k]``: (P_k,) int64 row indices into the grid's sites for offset ``k``
    (``None`` for the centre offset, which is the identity). ``out_index[k]`` is sorted ascending.
    """

    kernel_size: int
    in_index: tuple[torch.Tensor | None, ...]
    out_index: tuple[torch.Tensor | None, ...]
    #: Derived layouts and scratch buffers a backend keeps for this map (see ``native.fused_layout``).
    cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def volume(self) -> int:
        """Number of kernel offsets, K^3."""
        return self.kernel_size ** 3

    @property
    def centre(self) -> int:
        """Index of the zero offset."""
        return self.volume // 2

    def num_pairs(self) -> int:
        """Neighbour pairs over all offsets, excluding the centre identity."""
        return sum(int(i.numel()) for i in self.in_index if i is not None)


def kernel_offsets(kernel_size: int) -> list[tuple[int, int, int]]:
    """The (dz, dy, dx) displacement of every offset index, cross-correlation order."""
    radius = kernel_size // 2
    span = range(-radius, radius + 1)
    return [(dz, dy, dx) for dz in span for dy in span for dx in span]


def _search_positions(key_values: torch.Tensor, query: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(H, M) sorted positions where each query key would be, clamped to a valid index.

    ``query`` rows are the first-half offsets in kernel order. For K = 3 its rows come in runs of three
    along x (dx = -1, 0, +1; the last run is dx = -1 alone) and only the middle of each run is searched:
    the key just below it is the only candidate for dx = -1, and the next key (after the middle one if it
    is present) the only one for dx = +1. Other kernel sizes search every offset.
    """
    last = key_values.shape[0] - 1
    if kernel_size != 3:
        return torch.searchsorted(key_values, query).clamp_(max=last)
    middle_query = query[1::3].contiguous()  # (H // 3, M): dx = 0 of the full runs
    middle = torch.searchsorted(key_values, middle_query)
    found = key_values[middle.clamp(max=last)] == middle_query
    centre_row = torch.searchsorted(key_values, query[-1:] + 1)  # the site itself: dx = -1 is just below
    below = torch.cat([middle, centre_row]) - 1
    position = torch.empty_like(query)
    position[0::3] = below
    position[1::3] = middle
    position[2:-1:3] = middle + found
    return position.clamp_(0, last)


def build_kernel_map(coords: torch.Tensor, spatial_shape: tuple[int, int, int], kernel_size: int,
                     *, order: torch.Tensor | None = None) -> KernelMap:
    """Find every neighbour pair of a submanifold K^3 convolution by binary search on sorted keys.

    coords: (M, 4) integer [batch, z, y, x] voxel indices, unique, inside ``spatial_shape`` (Z, Y, X).
    ``order``: (M,) int64 argsort of the sites' keys (:func:`keys.coords_key`), when the caller already has it.
    Vectorised over sites and offsets: one ``torch.searchsorted`` for the first half of the kernel (for
    K = 3 only the dx = 0 offsets are searched, see :func:`_search_positions`).
    Keys are taken on the grid padded by K//2 on every side, so a neighbour beyond a face lands on an
    empty padding cell instead of wrapping round to the next row.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    num_sites = int(coords.shape[0])
    offsets = kernel_offsets(kernel_size)
    volume = len(offsets)
    in_index: list[torch.Tensor | None] = [None] * volume
    out_index: list[torch.Tensor | None] = [None] * volume
    if num_sites == 0 or kernel_size == 1:
        empty = torch.empty(0, dtype=torch.int64, device=coords.device)
        for k in range(volume):
            if k != volume // 2:
                in_index[k] = out_index[k] = empty
        return KernelMap(kernel_size, tuple(in_index), tuple(out_index))

    radius = kernel_size // 2
    padded_z, padded_y, padded_x = (size + 2 * radius for size in spatial_shape)
    padded_shape = (padded_z, padded_y, padded_x)
    shift = torch.tensor([0, radius, radius, radius], dtype=torch.int64, device=coords.device)
    keys = coords_key(coords.long() + shift, padded_shape)
    # voxelise() gives its sites in key order: then a site's row is its sorted position (no argsort) and
    # every offset's matches come out sorted from both sides (no mirror sort)
    presorted = order is None and bool((keys[1:] > keys[:-1]).all())
    if not presorted and order is None:
        order = torch.argsort(keys)
    key_values = keys if presorted else keys[order]  # padding keeps the order of the unpadded keys
    half = volume // 2
    size_y, size_x = padded_shape[1], padded_shape[2]
    displacement = torch.tensor(offsets[:half], dtype=torch.int64, device=coords.device)  # (H, 3) dz dy dx
    delta = (displacement[:, 0] * size_y + displacement[:, 1]) * size_x + displacement[:, 2]
    query = keys.unsqueeze(0) + delta.unsqueeze(1)  # (H, M), all offsets of the first half at once
    position = _search_positions(key_values, query, kernel_size)
    offset_id, out_rows = (key_values[position] == query).nonzero().unbind(1)  # by offset, then output row
    in_rows = position[offset_id, out_rows]
    if order is not None:  # not presorted
        in_rows = order[in_rows]
    counts = torch.bincount(offset_id, minlength=half).tolist()
    # Mirror offsets: the same pairs seen from the other side, sorted by (offset, output row).
    if presorted:  # the input rows of one offset already ascend with its output rows
        mirror_out, mirror_in = in_rows, out_rows
    else:
        mirror_order = torch.argsort(offset_id * num_sites + in_rows)
        mirror_out, mirror_in = in_rows[mirror_order], out_rows[mirror_order]
    pieces = zip(out_rows.split(counts), in_rows.split(counts), mirror_in.split(counts), mirror_out.split(counts))
    for k, (out_k, in_k, mirror_in_k, mirror_out_k) in enumerate(pieces):
        in_index[k], out_index[k] = in_k, out_k
        in_index[volume - 1 - k], out_index[volume - 1 - k] = mirror_in_k, mirror_out_k
    return KernelMap(kernel_size, tuple(in_index), tuple(out_index))
