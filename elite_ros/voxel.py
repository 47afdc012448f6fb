"""Range filter and multi-scale voxelisation of LiDAR points (shared by the runtime and training).

The grid follows the ELiTe / 2DPASS student (ELITE_REFERENCE.md §2): 0.1 m cubes over x, y in
[-50, 50] m and z in [-4, 2] m (1000 x 1000 x 60 cells), and coarser grids at scales 2, 4, 8, 16 with
``ceil(cells / scale)`` cells per axis (500/250/125/63 in x and y, 30/15/8/4 in z). A point's cell at a
scale is ``floor(cells * (p - min) / (max - min))``, clipped into the grid (the official code does not
clip, so augmented points could get negative indices: ELITE_REFERENCE.md §10 item 9).

Unique voxels are found with ``torch.unique`` on one linearised int64 key per point, which gives the same
voxels as ``unique(dim=0)`` on coordinate rows about 30x faster (ELITE_REFERENCE.md §12). Voxels come out
sorted by (batch, z, y, x), which is also the order spconv likes.

Everything is plain torch and differentiable where it matters (the scatter means), so training uses the
same code as the car.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

VOXEL_SIZE = 0.1  # metres, base cube edge (ref §2: 1000 cells over 100 m)
MIN_BOUND = (-50.0, -50.0, -4.0)  # metres, x y z (ref §1: min_volume_space)
MAX_BOUND = (50.0, 50.0, 2.0)  # metres, x y z (ref §1: max_volume_space)
SCALES = (1, 2, 4, 8, 16)  # base grid + the four SPV block scales (ref §1: scale_list + [1])


@dataclass(frozen=True)
class VoxelConfig:
    """Where the grid lies and how coarse each level is.

    voxel_size: edge of the base cube, metres. min_bound / max_bound: (x, y, z) metres; a point is kept
    only if strictly inside on every axis. scales: grid levels, 1 = base grid.
    """

    voxel_size: float = VOXEL_SIZE
    min_bound: tuple[float, float, float] = MIN_BOUND
    max_bound: tuple[float, float, float] = MAX_BOUND
    scales: tuple[int, ...] = SCALES

    def __post_init__(self) -> None:
        if not self.voxel_size > 0:
            raise ValueError(f"VoxelConfig.voxel_size must be > 0, got {self.voxel_size}")
        if len(self.min_bound) != 3 or len(self.max_bound) != 3:
            raise ValueError("VoxelConfig.min_bound and max_bound must each hold 3 values (x, y, z)")
        for axis, lo, hi in zip("xyz", self.min_bound, self.max_bound):
            if not lo < hi:
                raise ValueError(f"VoxelConfig bounds: min_bound {axis}={lo} must be < max_bound {axis}={hi}")
        if not self.scales or any(int(s) != s or s < 1 for s in self.scales):
            raise ValueError(f"VoxelConfig.scales must be positive integers, got {self.scales}")
        if 1 not in self.scales:
            raise ValueError(f"VoxelConfig.scales must contain 1 (the base grid), got {self.scales}")
        # dataclass(frozen) + tuples from YAML lists
        object.__setattr__(self, "min_bound", tuple(float(v) for v in self.min_bound))
        object.__setattr__(self, "max_bound", tuple(float(v) for v in self.max_bound))
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))

    @property
    def extent(self) -> tuple[float, float, float]:
        """(x, y, z) size of the volume, metres."""
        return tuple(hi - lo for lo, hi in zip(self.min_bound, self.max_bound))  # type: ignore[return-value]

    @property
    def base_cells(self) -> tuple[int, int, int]:
        """(X, Y, Z) number of base cubes per axis, e.g. (1000, 1000, 60)."""
        return tuple(int(round(e / self.voxel_size)) for e in self.extent)  # type: ignore[return-value]

    def cells(self, scale: int) -> tuple[int, int, int]:
        """(X, Y, Z) cells per axis at `scale`: ceil(base / scale) as in the official code."""
        return tuple(int(math.ceil(c / scale)) for c in self.base_cells)  # type: ignore[return-value]

    def spatial_shape(self, scale: int) -> tuple[int, int, int]:
        """(Z, Y, X) cells at `scale`, the order sparse convolutions use."""
        x, y, z = self.cells(scale)
        return (z, y, x)

    def cell_size(self, scale: int) -> tuple[float, float, float]:
        """(x, y, z) edge of one cell at `scale`, metres (not always voxel_size * scale: ceil)."""
        return tuple(e / c for e, c in zip(self.extent, self.cells(scale)))  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return {"voxel_size": self.voxel_size, "min_bound": list(self.min_bound),
                "max_bound": list(self.max_bound), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, values: dict) -> "VoxelConfig":
        unknown = set(values) - {"voxel_size", "min_bound", "max_bound", "scales"}
        if unknown:
            raise ValueError(f"VoxelConfig: unknown field(s) {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def in_range_mask(xyz: Tensor | np.ndarray, config: VoxelConfig = VoxelConfig()) -> Tensor | np.ndarray:
    """(N,) bool: points strictly inside the volume on every axis (ref §2 step 1).

    xyz: (N, 3) metres, torch or numpy (the result has the same kind). NaN and inf are never inside.
    """
    mask = None
    for axis in range(3):
        column = xyz[:, axis]
        inside = (column > config.min_bound[axis]) & (column < config.max_bound[axis])
        mask = inside if mask is None else mask & inside
    return mask


def range_filter(xyz: Tensor | np.ndarray, config: VoxelConfig = VoxelConfig()):
    """(mask (N,) bool, kept indices (K,) int64) of the points strictly inside the volume."""
    mask = in_range_mask(xyz, config)
    if isinstance(mask, np.ndarray):
        return mask, np.flatnonzero(mask).astype(np.int64)
    return mask, torch.nonzero(mask, as_tuple=False).flatten()


@dataclass
class ScaleVoxels:
    """The occupied voxels of one grid level.

    coords: (M, 4) int32 [batch, z, y, x], sorted, for the sparse-convolution seam.
    point_to_voxel: (Np,) int64, the voxel of each point. counts: (M,) int64 points per voxel.
    spatial_shape: (Z, Y, X) cells of this level.
    """

    scale: int
    spatial_shape: tuple[int, int, int]
    coords: Tensor
    point_to_voxel: Tensor
    counts: Tensor

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


@dataclass
class VoxelTransition:
    """How to average features from a source level's voxels into a destination level's voxels.

    Equals the point-weighted mean ``scatter_mean(src_features[point_to_src], point_to_dst)`` but runs over
    the P distinct (source voxel, destination voxel) pairs instead of all points: each pair carries
    weight = points in the pair / points in the destination voxel. Grids of different scales are not
    always nested (z at scales 8 and 16), so a source voxel may feed two destination voxels.
    """

    source: Tensor  # (P,) int64 source voxel of each pair
    destination: Tensor  # (P,) int64 destination voxel of each pair
    weight: Tensor  # (P,) float32, sums to 1 over each destination voxel
    num_destination: int

    def apply(self, features: Tensor) -> Tensor:
        """(M_src, C) -> (M_dst, C), the point-weighted mean."""
        weighted = features.index_select(0, self.source) * self.weight.to(features.dtype).unsqueeze(1)
        out = features.new_zeros((self.num_destination, features.shape[1]))
        return out.index_add_(0, self.destination, weighted)


@dataclass
class MultiScaleVoxels:
    """All grid levels of a batch of points, plus maps derived from them (computed once, cached).

    batch_index: (Np,) int64 sample of each point. levels: scale -> ScaleVoxels.
    """

    config: VoxelConfig
    batch_size: int
    batch_index: Tensor
    levels: dict[int, ScaleVoxels]
    _transitions: dict[tuple[int, int], VoxelTransition] = field(default_factory=dict, repr=False)
    _coarsened: dict[tuple[int, int], tuple[Tensor, int]] = field(default_factory=dict, repr=False)

    @property
    def num_points(self) -> int:
        return int(self.batch_index.shape[0])

    def __getitem__(self, scale: int) -> ScaleVoxels:
        try:
            return self.levels[scale]
        except KeyError:
            raise KeyError(f"no voxel level at scale {scale}; have {sorted(self.levels)}") from None

    def transition(self, source_scale: int, destination_scale: int) -> VoxelTransition:
        """Cached `VoxelTransition` from one level to another."""
        key = (source_scale, destination_scale)
        if key not in self._transitions:
            self._transitions[key] = voxel_transition(
                self[source_scale].point_to_voxel, self[destination_scale].point_to_voxel,
                self[source_scale].num_voxels, self[destination_scale].num_voxels)
        return self._transitions[key]

    def coarsened(self, scale: int, factor: int) -> tuple[Tensor, int]:
        """Cached (voxel -> parent (M,) int64, number of parents) for the level's voxel coords // factor.

        This is the "2x coarser" context grid of the student's point encoders (ref §3 item 3), which is
        nested in the level itself (unlike the next level's own grid).
        """
        key = (scale, factor)
        if key not in self._coarsened:
            self._coarsened[key] = coarsen_coords(self[scale].coords, self[scale].spatial_shape, factor)
        return self._coarsened[key]


def _linear_key(batch: Tensor, z: Tensor, y: Tensor, x: Tensor, zyx: tuple[int, int, int]) -> Tensor:
    """One int64 per cell, ordered like (batch, z, y, x) rows."""
    Z, Y, X = zyx
    return ((batch * Z + z) * Y + y) * X + x


def _decode_key(key: Tensor, zyx: tuple[int, int, int]) -> Tensor:
    """(M,) int64 keys -> (M, 4) int32 [batch, z, y, x]."""
    Z, Y, X = zyx
    x = key % X
    rest = key // X
    y = rest % Y
    rest = rest // Y
    z = rest % Z
    batch = rest // Z
    return torch.stack([batch, z, y, x], dim=1).to(torch.int32)


def point_cells(xyz: Tensor, config: VoxelConfig, scale: int) -> Tensor:
    """(Np, 3) metres -> (Np, 3) int64 cell (x, y, z) at `scale`, clipped into the grid."""
    cells = torch.tensor(config.cells(scale), dtype=xyz.dtype, device=xyz.device)
    lower = torch.tensor(config.min_bound, dtype=xyz.dtype, device=xyz.device)
    extent = torch.tensor(config.extent, dtype=xyz.dtype, device=xyz.device)
    index = torch.floor(cells * (xyz - lower) / extent).to(torch.int64)
    upper = torch.tensor(config.cells(scale), dtype=torch.int64, device=xyz.device) - 1
    return torch.minimum(index.clamp_min_(0), upper)


def voxelise_level(xyz: Tensor, batch_index: Tensor, config: VoxelConfig, scale: int) -> ScaleVoxels:
    """Unique voxels of one level: coords (M,4) int32 [b,z,y,x], point -> voxel (Np,), counts (M,)."""
    cell = point_cells(xyz, config, scale)
    zyx = config.spatial_shape(scale)
    key = _linear_key(batch_index, cell[:, 2], cell[:, 1], cell[:, 0], zyx)
    unique_key, inverse, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    return ScaleVoxels(scale=scale, spatial_shape=zyx, coords=_decode_key(unique_key, zyx),
                       point_to_voxel=inverse, counts=counts)


@torch.no_grad()
def voxelise(xyz: Tensor, batch_index: Tensor | None = None, batch_size: int | None = None,
             config: VoxelConfig = VoxelConfig()) -> MultiScaleVoxels:
    """Voxelise a batch of points at every scale of `config`.

    xyz: (Np, 3) float metres (already range-filtered or not: cells are clipped into the grid).
    batch_index: (Np,) int64 sample of each point (default all 0). batch_size: samples (default
    max(batch_index) + 1, at least 1).
    """
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(f"voxelise: xyz must be (N, 3), got {tuple(xyz.shape)}")
    xyz = xyz[:, :3]
    if batch_index is None:
        batch_index = torch.zeros(xyz.shape[0], dtype=torch.int64, device=xyz.device)
    batch_index = batch_index.to(device=xyz.device, dtype=torch.int64)
    if batch_index.shape != (xyz.shape[0],):
        raise ValueError(f"voxelise: batch_index must be ({xyz.shape[0]},), got {tuple(batch_index.shape)}")
    if batch_size is None:
        batch_size = int(batch_index.max().item()) + 1 if batch_index.numel() else 1
    levels = {scale: voxelise_level(xyz, batch_index, config, scale) for scale in config.scales}
    return MultiScaleVoxels(config=config, batch_size=batch_size, batch_index=batch_index, levels=levels)


def voxel_transition(point_to_source: Tensor, point_to_destination: Tensor, num_source: int,
                     num_destination: int) -> VoxelTransition:
    """Distinct (source, destination) voxel pairs of the points and their averaging weights."""
    pair_key = point_to_source * num_destination + point_to_destination
    unique_pair, pair_count = torch.unique(pair_key, sorted=True, return_counts=True)
    source = unique_pair // num_destination
    destination = unique_pair % num_destination
    destination_count = torch.zeros(num_destination, dtype=torch.int64, device=pair_key.device)
    destination_count.index_add_(0, destination, pair_count)
    weight = pair_count.to(torch.float32) / destination_count[destination].to(torch.float32)
    return VoxelTransition(source=source, destination=destination, weight=weight,
                           num_destination=num_destination)


def coarsen_coords(coords: Tensor, spatial_shape: tuple[int, int, int], factor: int) -> tuple[Tensor, int]:
    """Voxels (M, 4) int32 [b,z,y,x] -> (parent of each voxel (M,) int64, number of parents) at coords // factor."""
    coarse_shape = tuple(int(math.ceil(s / factor)) for s in spatial_shape)
    c = coords.to(torch.int64)
    key = _linear_key(c[:, 0], c[:, 1] // factor, c[:, 2] // factor, c[:, 3] // factor, coarse_shape)
    unique_key, inverse = torch.unique(key, sorted=True, return_inverse=True)
    return inverse, int(unique_key.shape[0])


def scatter_mean(values: Tensor, index: Tensor, num_segments: int, counts: Tensor | None = None) -> Tensor:
    """Mean of the rows of `values` (N, C) that share an index (N,) in [0, num_segments) -> (num_segments, C).

    Empty segments get 0. `counts` (num_segments,) may be passed when known (e.g. ScaleVoxels.counts).
    Differentiable (index_add_).
    """
    out = values.new_zeros((num_segments,) + tuple(values.shape[1:]))
    out.index_add_(0, index, values)
    if counts is None:
        counts = torch.bincount(index, minlength=num_segments)
    divisor = counts.clamp_min(1).to(values.dtype)
    return out / divisor.view((-1,) + (1,) * (values.ndim - 1))


def scatter_max(values: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Row-wise maximum per segment (N, C) -> (num_segments, C); empty segments get 0."""
    shape = (num_segments,) + tuple(values.shape[1:])
    out = values.new_zeros(shape)
    expanded = index.view((-1,) + (1,) * (values.ndim - 1)).expand_as(values)
    return out.scatter_reduce(0, expanded, values, reduce="amax", include_self=False)
