"""Range filter and multi-scale voxelisation of LiDAR points (shared by the runtime and training).

The grid follows the ELiTe / 2DPASS student (docs/reference.md §2): 0.1 m cubes over x, y in
[-50, 50] m and z in [-4, 2] m (1000 x 1000 x 60 cells), and coarser grids at scales 2, 4, 8, 16 with
``ceil(cells / scale)`` cells per axis (500/250/125/63 in x and y, 30/15/8/4 in z). A point's cell at a
scale is ``floor(cells * (p - min) / (max - min))``, clipped into the grid (the official code does not
clip, so augmented points could get negative indices: docs/reference.md §10 item 9).

Voxels are found by one stable sort of a linearised int64 key per point, which gives the same voxels
as ``unique(dim=0)`` on coordinate rows (~30x slower, docs/reference.md §12) plus the point order that
makes every per-voxel mean one fused ``embedding_bag`` (several times faster than ``index_add_`` on the
CPU). Voxels come out sorted by (batch, z, y, x), which is also the order spconv likes.

Everything is plain torch and differentiable where it matters (the scatter means), so training uses the
same code as the car.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .segments import first_offsets, sorted_groups
from .sparse.keys import decode_key, linear_key

VOXEL_SIZE = 0.1  # metres, base cube edge (ref §2: 1000 cells over 100 m)
MIN_BOUND = (-50.0, -50.0, -4.0)  # metres, x y z (ref §1: min_volume_space)
MAX_BOUND = (50.0, 50.0, 2.0)  # metres, x y z (ref §1: max_volume_space)
SCALES = (1, 2, 4, 8, 16)  # base grid + the four SPV block scales (ref §1: scale_list + [1])
#: most base cells a grid may have: the int64 cell key (`sparse.keys`) of a padded grid then leaves room for
#: 2**22 scans per batch (default grid: 1000 x 1000 x 60 = 6e7 cells)
MAX_GRID_CELLS = 2**40
MAX_AXIS_CELLS = 2**31 - 1  # cell coordinates are int32
MAX_SCALES = 16  # grid levels (the student uses 5)


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
        if not (self.voxel_size > 0 and math.isfinite(self.voxel_size)):
            raise ValueError(f"VoxelConfig.voxel_size must be a finite number > 0, got {self.voxel_size}")
        if len(self.min_bound) != 3 or len(self.max_bound) != 3:
            raise ValueError("VoxelConfig.min_bound and max_bound must each hold 3 values (x, y, z)")
        for axis, lo, hi in zip("xyz", self.min_bound, self.max_bound):
            if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo)):
                raise ValueError(f"VoxelConfig bounds must be finite, got {axis} from {lo} to {hi}")
            if not lo < hi:
                raise ValueError(f"VoxelConfig bounds: min_bound {axis}={lo} must be < max_bound {axis}={hi}")
        if (not self.scales or len(self.scales) > MAX_SCALES
                or any(not (math.isfinite(s) and int(s) == s >= 1) for s in self.scales)):
            raise ValueError(f"VoxelConfig.scales must be 1..{MAX_SCALES} positive integers, got {self.scales}")
        cells = [round((hi - lo) / self.voxel_size) for lo, hi in zip(self.min_bound, self.max_bound)]  # base_cells
        if any(not 1 <= c <= MAX_AXIS_CELLS for c in cells) or math.prod(cells) > MAX_GRID_CELLS:
            shown = " x ".join(f"{c:.3g}" for c in cells)
            raise ValueError(f"VoxelConfig.voxel_size {self.voxel_size} m gives {shown} base cells: it must give "
                             f"1..{MAX_AXIS_CELLS} per axis and at most {MAX_GRID_CELLS} in all (the int64 cell key)")
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


def inside_box(xyz: Tensor | np.ndarray, min_bound: Sequence[float] = MIN_BOUND,
               max_bound: Sequence[float] = MAX_BOUND) -> Tensor | np.ndarray:
    """(N,) bool: points strictly inside min_bound < p < max_bound on every axis (ref §2 step 1).

    xyz: (N, >= 3) metres (columns x, y, z first), torch or numpy (the result has the same kind). NaN and
    inf are never inside.
    """
    if not isinstance(xyz, Tensor):
        xyz = np.asarray(xyz)
    mask = (xyz[:, 0] > min_bound[0]) & (xyz[:, 0] < max_bound[0])
    for axis in (1, 2):
        mask = mask & (xyz[:, axis] > min_bound[axis]) & (xyz[:, axis] < max_bound[axis])
    return mask


def in_range_mask(xyz: Tensor | np.ndarray, config: VoxelConfig = VoxelConfig()) -> Tensor | np.ndarray:
    """(N,) bool: points strictly inside the grid's volume on every axis (`inside_box` of the config)."""
    return inside_box(xyz, config.min_bound, config.max_bound)


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
    point_order: (Np,) int64 the points sorted by voxel; offsets: (M,) int64 where each voxel's points
    start in `point_order` (so per-voxel reductions are one fused `embedding_bag`).
    spatial_shape: (Z, Y, X) cells of this level.
    """

    scale: int
    spatial_shape: tuple[int, int, int]
    coords: Tensor
    point_to_voxel: Tensor
    counts: Tensor
    point_order: Tensor
    offsets: Tensor

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])

    def mean(self, values: Tensor) -> Tensor:
        """Per-voxel mean of point values (Np, C) -> (M, C); differentiable."""
        if values.shape[0] != self.point_to_voxel.shape[0]:
            raise ValueError(f"mean: {values.shape[0]} rows for {self.point_to_voxel.shape[0]} points")
        if self.num_voxels == 0:
            return values.new_zeros((0, values.shape[1]))
        return F.embedding_bag(self.point_order, values, self.offsets, mode="mean")


@dataclass
class VoxelTransition:
    """A weighted sum from a source set of voxels into a destination set, as P (source, destination) pairs.

    From one level to another it equals the point-weighted mean
    ``scatter_mean(src_features[point_to_src], point_to_dst)`` but runs over the distinct pairs instead of
    all points: each pair carries weight = points in the pair / points in the destination voxel. Grids of
    different scales are not always nested (z at scales 8 and 16), so a source voxel may feed two
    destination voxels. Pairs are sorted by destination; `offsets` (num_destination,) is where each
    destination's pairs start, so `apply` is one fused, parallel `embedding_bag`.
    """

    source: Tensor  # (P,) int64 source voxel of each pair
    destination: Tensor  # (P,) int64 destination voxel of each pair, sorted
    weight: Tensor  # (P,) float32, sums to 1 over each destination voxel
    offsets: Tensor  # (num_destination,) int64 first pair of each destination
    num_destination: int

    def apply(self, features: Tensor) -> Tensor:
        """(M_src, C) -> (M_dst, C), the weighted sum over each destination's pairs."""
        if self.num_destination == 0:
            return features.new_zeros((0, features.shape[1]))
        return F.embedding_bag(self.source, features, self.offsets, mode="sum",
                               per_sample_weights=self.weight.to(features.dtype))


@dataclass
class Coarsening:
    """Voxels grouped into parents at coords // factor: parent (M,) int64 of each voxel, and the
    voxel-weighted mean into the parents (`VoxelTransition` with weight 1 / voxels per parent)."""

    parent: Tensor
    mean: VoxelTransition

    @property
    def num_parents(self) -> int:
        return self.mean.num_destination


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
    _coarsened: dict[tuple[int, int], Coarsening] = field(default_factory=dict, repr=False)
    _tables: dict[tuple[int, ...], Tensor] = field(default_factory=dict, repr=False)
    _combinations: dict[tuple[int, ...], tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

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

    def coarsened(self, scale: int, factor: int) -> Coarsening:
        """Cached grouping of the level's voxels by coords // factor.

        This is the "2x coarser" context grid of the student's point encoders (ref §3 item 3), which is
        nested in the level itself (unlike the next level's own grid).
        """
        key = (scale, factor)
        if key not in self._coarsened:
            self._coarsened[key] = coarsen_coords(self[scale].coords, self[scale].spatial_shape, factor)
        return self._coarsened[key]

    def point_to_voxel_table(self, scales: tuple[int, ...]) -> Tensor:
        """Cached (Np, len(scales)) int64: each point's voxel at every scale, as rows of the levels'
        voxels concatenated in `scales` order (for one `embedding_bag` over several levels)."""
        scales = tuple(scales)
        if scales not in self._tables:
            columns, offset = [], 0
            for scale in scales:
                columns.append(self[scale].point_to_voxel + offset)
                offset += self[scale].num_voxels
            self._tables[scales] = torch.stack(columns, dim=1)
        return self._tables[scales]


    def voxel_combinations(self, scales: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """Cached distinct tuples (voxel at each of `scales`) over the points.

        Returns (rows (U, len(scales)) int64, as in `point_to_voxel_table`; inverse (Np,) int64 the row of
        each point). Points with the same tuple get the same result from any per-voxel computation, so it
        can run on U rows (~a quarter of the points for scales 2, 4, 8, 16) and be gathered back.
        """
        scales = tuple(scales)
        if scales not in self._combinations:
            key = torch.zeros(self.num_points, dtype=torch.int64, device=self.batch_index.device)
            span = 1
            for scale in scales:
                count = max(self[scale].num_voxels, 1)
                if span * count >= _KEY_LIMIT:  # compress before the key would overflow int64
                    _, key, counts, _, _ = sorted_groups(key)
                    span = max(int(counts.shape[0]), 1)
                key = key * count + self[scale].point_to_voxel
                span *= count
            _, inverse, _, order, offsets = sorted_groups(key)
            rows = self.point_to_voxel_table(scales).index_select(0, order[offsets])
            self._combinations[scales] = (rows, inverse)
        return self._combinations[scales]


_KEY_LIMIT = 1 << 62  # linear keys stay below this (int64)


def point_cells(xyz: Tensor, config: VoxelConfig, scale: int) -> Tensor:
    """(Np, 3) metres -> (Np, 3) int64 cell (x, y, z) at `scale`, clipped into the grid."""
    cells = torch.tensor(config.cells(scale), dtype=xyz.dtype, device=xyz.device)
    lower = torch.tensor(config.min_bound, dtype=xyz.dtype, device=xyz.device)
    extent = torch.tensor(config.extent, dtype=xyz.dtype, device=xyz.device)
    index = torch.floor(cells * (xyz - lower) / extent).to(torch.int64)
    upper = torch.tensor(config.cells(scale), dtype=torch.int64, device=xyz.device) - 1
    return torch.minimum(index.clamp_min_(0), upper)


def cell_keys(xyz: Tensor, config: VoxelConfig, scale: int, batch_index: Tensor | int = 0) -> Tensor:
    """(Np,) int64 linear key (`sparse.keys`) of each point's cell at `scale`; batch_index (Np,) or one int."""
    cell = point_cells(xyz, config, scale)
    return linear_key(batch_index, cell[:, 2], cell[:, 1], cell[:, 0], config.spatial_shape(scale))


def voxelise_level(xyz: Tensor, batch_index: Tensor, config: VoxelConfig, scale: int) -> ScaleVoxels:
    """Unique voxels of one level: coords (M,4) int32 [b,z,y,x], point -> voxel (Np,), counts (M,)."""
    zyx = config.spatial_shape(scale)
    unique_key, inverse, counts, order, offsets = sorted_groups(cell_keys(xyz, config, scale, batch_index))
    return ScaleVoxels(scale=scale, spatial_shape=zyx, coords=decode_key(unique_key, zyx),
                       point_to_voxel=inverse, counts=counts, point_order=order, offsets=offsets)


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
    """Distinct (source, destination) voxel pairs of the points and their point-weighted averaging weights."""
    pair_key = point_to_destination * max(num_source, 1) + point_to_source  # sorted by destination
    unique_pair, _, pair_count, _, _ = sorted_groups(pair_key)
    source = unique_pair % max(num_source, 1)
    destination = unique_pair // max(num_source, 1)
    destination_count = torch.zeros(num_destination, dtype=torch.int64, device=pair_key.device)
    destination_count.index_add_(0, destination, pair_count)
    weight = pair_count.to(torch.float32) / destination_count[destination].to(torch.float32)
    pairs_per_destination = torch.bincount(destination, minlength=num_destination)
    return VoxelTransition(source=source, destination=destination, weight=weight,
                           offsets=first_offsets(pairs_per_destination), num_destination=num_destination)


def coarsen_coords(coords: Tensor, spatial_shape: tuple[int, int, int], factor: int) -> Coarsening:
    """Voxels (M, 4) int32 [b,z,y,x] grouped by coords // factor (voxel-weighted mean into the parents)."""
    coarse_z, coarse_y, coarse_x = (int(math.ceil(s / factor)) for s in spatial_shape)
    coarse_shape = (coarse_z, coarse_y, coarse_x)
    c = coords.to(torch.int64)
    key = linear_key(c[:, 0], c[:, 1] // factor, c[:, 2] // factor, c[:, 3] // factor, coarse_shape)
    _, parent, counts, order, offsets = sorted_groups(key)
    weight = 1.0 / counts.to(torch.float32)
    mean = VoxelTransition(source=order, destination=parent[order], weight=weight[parent[order]],
                           offsets=offsets, num_destination=int(counts.shape[0]))
    return Coarsening(parent=parent, mean=mean)
