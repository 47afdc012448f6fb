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

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KernelMap:
    """Neighbour pairs of one grid for one odd kernel size.

    ``in_index[k]`` / ``out_index[k]``: (P_k,) int64 row indices into the grid's sites for offset ``k``
    (``None`` for the centre offset, which is the identity). ``out_index[k]`` is sorted ascending.
    """

    kernel_size: int
    in_index: tuple[torch.Tensor | None, ...]
    out_index: tuple[torch.Tensor | None, ...]

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


def linear_keys(coords: torch.Tensor, spatial_shape: tuple[int, int, int]) -> torch.Tensor:
    """One int64 key per site: ``((b * Z + z) * Y + y) * X + x``; coords (M, 4) [batch, z, y, x]."""
    c = coords.long()
    size_z, size_y, size_x = spatial_shape
    return ((c[:, 0] * size_z + c[:, 1]) * size_y + c[:, 2]) * size_x + c[:, 3]


def build_kernel_map(coords: torch.Tensor, spatial_shape: tuple[int, int, int], kernel_size: int,
                     *, keys: torch.Tensor | None = None, sorted_keys: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> KernelMap:
    """Find every neighbour pair of a submanifold K^3 convolution by binary search on sorted keys.

    coords: (M, 4) integer [batch, z, y, x] voxel indices, unique, inside ``spatial_shape`` (Z, Y, X).
    ``keys`` / ``sorted_keys`` (values, argsort) may be passed when the caller already has them.
    Vectorised over sites; one ``torch.searchsorted`` per offset of the first half of the kernel.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if keys is None:
        keys = linear_keys(coords, spatial_shape)
    if sorted_keys is None:
        sorted_keys = torch.sort(keys)
    key_values, key_order = sorted_keys
    num_sites = keys.numel()
    offsets = kernel_offsets(kernel_size)
    volume = len(offsets)
    in_index: list[torch.Tensor | None] = [None] * volume
    out_index: list[torch.Tensor | None] = [None] * volume
    if num_sites == 0 or kernel_size == 1:
        empty = keys.new_empty(0)
        for k in range(volume):
            if k != volume // 2:
                in_index[k] = out_index[k] = empty
        return KernelMap(kernel_size, tuple(in_index), tuple(out_index))

    size_z, size_y, size_x = spatial_shape
    c = coords.long()
    # Per axis and displacement: which sites stay inside the grid (keys would wrap round otherwise).
    radius = kernel_size // 2
    inside = {}
    for axis, size in ((1, size_z), (2, size_y), (3, size_x)):
        for d in range(-radius, radius + 1):
            if d != 0:
                moved = c[:, axis] + d
                inside[axis, d] = (moved >= 0) & (moved < size)
    last = num_sites - 1
    for k in range(volume // 2):
        dz, dy, dx = offsets[k]
        query = keys + ((dz * size_y + dy) * size_x + dx)
        position = torch.searchsorted(key_values, query).clamp_(max=last)
        hit = key_values[position] == query
        for axis, d in ((1, dz), (2, dy), (3, dx)):
            if d != 0:
                hit &= inside[axis, d]
        out_rows = hit.nonzero().squeeze(1)
        in_rows = key_order[position[out_rows]]
        in_index[k], out_index[k] = in_rows, out_rows
        # Mirror offset: the same pairs seen from the other side (outputs sorted for locality).
        mirror_out, permutation = torch.sort(in_rows)
        in_index[volume - 1 - k], out_index[volume - 1 - k] = out_rows[permutation], mirror_out
    return KernelMap(kernel_size, tuple(in_index), tuple(out_index))
