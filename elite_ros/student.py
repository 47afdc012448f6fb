"""The ELiTe student: the 2DPASS "SPVCNN-lite" point-voxel network, 1,933,460 parameters (ref §3).

Layout (docs/reference.md §3):
- input MLP: per point [x, y, z, i] ++ (xyz - mean xyz of its 0.1 m voxel) ++ (xyz - voxel lower corner)
  -> Linear(10, 64) -> ReLU -> Linear(64, 64) -> mean over the 0.1 m voxel;
- four SPV blocks at scales 2, 4, 8, 16 (input resolutions 1, 2, 4, 8), all 64 channels, each
  * a voxel branch of 2 SparseBasicBlocks (submanifold 3x3x3 convs, BN, LeakyReLU(0.1), 1x1x1 shortcut);
  * a point branch: identity Linear + a context branch on the 2x coarser grid, fused, averaged to the
    block's output scale; plus the voxel branch averaged to that scale;
- decoder on the concatenated per-point block outputs: Linear(256, 128) -> ReLU -> Linear(128, 20).

Exact algebraic rewrites make it cheaper than the official code without changing what it computes
(up to float rounding), in training as in inference:
- the input MLP's second Linear is applied after the voxel mean (a mean of an affine map is the affine map
  of the mean);
- the point encoder's output MLP runs once per voxel instead of once per point (all points of a voxel
  carry the same input), then a point-weighted mean over (voxel, voxel) pairs replaces the per-point one
  (`VoxelTransition`); its first Linear is split so the context half runs once per context voxel;
- the decoder's first Linear is split into four 64-column blocks applied per voxel of each block's output
  scale and summed (Linear over a concatenation = sum of Linears over the parts), the gather and sum
  fused in one `embedding_bag`; the whole decoder runs once per distinct tuple of stage voxels (points
  sharing all four voxels get identical logits) and is gathered back to the points.
In inference (eval mode, autograd off, on a backend that `fuses_inference`) each SparseBasicBlock folds its
BatchNorms into the conv weights (`sparse.fold_batch_norm`) and sums the 1x1x1 shortcut at conv2's centre
offset: two fused convolutions (`SparseBackend.fused_conv`) and two in-place LeakyReLUs.
Every per-voxel mean is a fused `embedding_bag` over precomputed point orders (see voxel.py).

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .labels import MAX_CLASSES, NUM_CLASSES
from .sparse import SparseGrid, SubMConv3d, fold_batch_norm, resolve_backend
from .voxel import MultiScaleVoxels, VoxelConfig, voxelise

IN_FEATURES = 4  # x, y, z, intensity (ref §1: input_dims)
HIDDEN_CHANNELS = 64  # ref §1: hiden_size
STAGE_SCALES = (2, 4, 8, 16)  # ref §1: scale_list
DECODER_CHANNELS = 128  # ref §3: Linear(256, 128)
LEAKY_SLOPE = 0.1  # ref §3: LeakyReLU(0.1)
OFFSET_FEATURES = 6  # ref §3: xyz - voxel mean, xyz - voxel corner
CONTEXT_FACTOR = 2  # ref §3: point-encoder context on the 2x coarser grid
EXPECTED_PARAMETERS = 1_933_460  # ref §3 / §12: the official student, counted
# Upper bounds of an architecture (a checkpoint's metadata is checked against them before anything is built):
MAX_CHANNELS = 512  # twice the widest published 2DPASS student ("6scale-256dimension"); 2048 would be GBs
MAX_IN_FEATURES = 64  # x, y, z + per-point channels
MAX_STAGES = 8  # the official students have 4 or 6 (ref §1: scale_list)
MAX_STAGE_SCALE = 1024  # a 102 m cell at the 0.1 m base voxel: the whole default grid


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of the student (what a checkpoint must agree with)."""

    in_features: int = IN_FEATURES
    hidden_channels: int = HIDDEN_CHANNELS
    num_classes: int = NUM_CLASSES
    stage_scales: tuple[int, ...] = STAGE_SCALES
    decoder_channels: int = DECODER_CHANNELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_scales", tuple(int(s) for s in self.stage_scales))
        limits = {"in_features": MAX_IN_FEATURES, "hidden_channels": MAX_CHANNELS, "num_classes": MAX_CLASSES,
                  "decoder_channels": MAX_CHANNELS}
        for name, limit in limits.items():
            if not 1 <= int(getattr(self, name)) <= limit:
                raise ValueError(f"StudentConfig.{name} must lie in 1..{limit}, got {getattr(self, name)}")
        if self.in_features < 3:
            raise ValueError(f"StudentConfig.in_features must be >= 3 (x, y, z first), got {self.in_features}")
        if not self.stage_scales or any(b <= a for a, b in zip((1,) + self.stage_scales, self.stage_scales)):
            raise ValueError(f"StudentConfig.stage_scales must increase from > 1, got {self.stage_scales}")
        if len(self.stage_scales) > MAX_STAGES or self.stage_scales[-1] > MAX_STAGE_SCALE:
            raise ValueError(f"StudentConfig.stage_scales must hold at most {MAX_STAGES} scales up to "
                             f"{MAX_STAGE_SCALE}, got {self.stage_scales}")

    @property
    def input_scales(self) -> tuple[int, ...]:
        """Resolution each block's voxel branch runs at: 1, then the previous block's scale."""
        return (1,) + self.stage_scales[:-1]


@dataclass
class StudentInput:
    """One batch for the student.

    points: (Np, in_features) float, x y z metres + intensity (already scaled as in training).
    voxels: multi-scale voxelisation of the same points (`voxel.voxelise`), batch index inside.
    """

    points: Tensor
    voxels: MultiScaleVoxels

    @classmethod
    def from_points(cls, points: Tensor, batch_index: Tensor | None = None, batch_size: int | None = None,
                    voxel_config: VoxelConfig = VoxelConfig()) -> StudentInput:
        return cls(points=points, voxels=voxelise(points[:, :3], batch_index, batch_size, voxel_config))


@dataclass
class StageFeatures:
    """What one SPV block's voxel branch produced (the multi-stage student features PPMSKD distils).

    voxel_features: (N_scale, C) at the block's input resolution. point_to_voxel: (Np,) int64.
    scale: that resolution (1, 2, 4, 8).
    """

    voxel_features: Tensor
    point_to_voxel: Tensor
    scale: int

    def point_features(self) -> Tensor:
        """(Np, C) the voxel features gathered to the points."""
        return self.voxel_features.index_select(0, self.point_to_voxel)


@dataclass
class StudentOutput:
    """logits: (Np, num_classes) per point. stages: one StageFeatures per SPV block, in order."""

    logits: Tensor
    stages: list[StageFeatures]


@dataclass
class StudentEncoding:
    """What the student computes before its decoder's activation (`Student.encode`).

    stages: one StageFeatures per SPV block. hidden: (U, decoder_channels) the decoder's first Linear over
    the concatenated block outputs, before its ReLU, once per distinct tuple of stage voxels (points sharing
    all of them share it). point_to_row: (Np,) int64 the row of `hidden` of each point.
    """

    stages: list[StageFeatures]
    hidden: Tensor
    point_to_row: Tensor


class SparseBasicBlock(nn.Module):
    """[SubM 3x3x3 -> BN -> LeakyReLU -> SubM 3x3x3 -> BN] + [SubM 1x1x1 -> BN] -> LeakyReLU (ref §3)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = SubMConv3d(in_channels, out_channels, kernel_size=3, bias=False)
        self.norm1 = nn.BatchNorm1d(out_channels)
        self.conv2 = SubMConv3d(out_channels, out_channels, kernel_size=3, bias=False)
        self.norm2 = nn.BatchNorm1d(out_channels)
        self.shortcut_conv = SubMConv3d(in_channels, out_channels, kernel_size=1, bias=False)
        self.shortcut_norm = nn.BatchNorm1d(out_channels)
        self.activation = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, features: Tensor, grid: SparseGrid) -> Tensor:
        """features (M, in) at the active sites of `grid` -> (M, out)."""
        if self._can_fuse(features, grid):
            return self._fused_forward(features, grid)
        shortcut = self.shortcut_norm(self.shortcut_conv(features, grid))
        out = self.activation(self.norm1(self.conv1(features, grid)))
        out = self.norm2(self.conv2(out, grid))
        return self.activation(out + shortcut)

    def _can_fuse(self, features: Tensor, grid: SparseGrid) -> bool:
        """Inference on a fusing backend with running BN statistics: the fused path computes the same."""
        return (not self.training and not torch.is_grad_enabled() and grid.backend.fuses_inference
                and not torch.is_autocast_enabled(features.device.type)
                and all(norm.track_running_stats and norm.running_mean is not None
                        for norm in (self.norm1, self.norm2, self.shortcut_norm)))

    def _fused_forward(self, features: Tensor, grid: SparseGrid) -> Tensor:
        """Inference: every BN folded into its conv, the 1x1x1 shortcut summed at conv2's centre offset.

        Two fused convolutions (`SparseBackend.fused_conv`: gather, GEMM per offset, one segmented sum on
        the native backend) and two in-place LeakyReLUs, instead of three convs, three BNs, an add and two
        activations.
        """
        if features.dim() != 2 or features.shape != (grid.num_sites, self.conv1.in_channels):
            raise ValueError(f"features must have shape ({grid.num_sites}, {self.conv1.in_channels}) for this grid,"
                             f" got {tuple(features.shape)}")
        backend, kernel_size, dtype = grid.backend, self.conv1.kernel_size, features.dtype
        weight1, bias1 = fold_batch_norm(self.conv1, self.norm1)
        weight2, bias2 = fold_batch_norm(self.conv2, self.norm2)
        shortcut_weight, shortcut_bias = fold_batch_norm(self.shortcut_conv, self.shortcut_norm)
        hidden = backend.fused_conv(features, weight1.to(dtype), grid, kernel_size, bias=bias1.to(dtype))
        F.leaky_relu_(hidden, LEAKY_SLOPE)
        shortcut = shortcut_weight.reshape(shortcut_weight.shape[0], -1).t().to(dtype)  # (in, out)
        out = backend.fused_conv(hidden, weight2.to(dtype), grid, kernel_size, bias=(bias2 + shortcut_bias).to(dtype),
                                 extra=(features, shortcut))
        return F.leaky_relu_(out, LEAKY_SLOPE)


class PointEncoder(nn.Module):
    """The point branch of an SPV block (2DPASS `point_encoder`, ref §3 item 3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.identity = nn.Sequential(nn.Linear(channels, channels), nn.LeakyReLU(LEAKY_SLOPE))
        self.context = nn.Sequential(
            nn.Linear(channels, half), nn.LeakyReLU(LEAKY_SLOPE), nn.BatchNorm1d(half),
            nn.Linear(half, half), nn.LeakyReLU(LEAKY_SLOPE), nn.BatchNorm1d(half),
            nn.Linear(half, channels), nn.LeakyReLU(LEAKY_SLOPE))
        self.output = nn.Sequential(nn.Linear(2 * channels, channels), nn.LeakyReLU(LEAKY_SLOPE),
                                    nn.Linear(channels, channels))

    def forward(self, features: Tensor, voxels: MultiScaleVoxels, scale: int, out_scale: int) -> Tensor:
        """features (M_scale, C) -> (M_out_scale, C).

        Context: voxel-weighted mean on the grid `scale` coords // 2, MLP, broadcast back; then the output
        MLP per voxel and the point-weighted mean to the `out_scale` voxels.
        """
        coarse = voxels.coarsened(scale, CONTEXT_FACTOR)
        context = self.context(coarse.mean.apply(features))  # (parents, C)
        # output[0] over cat(identity, broadcast context) == identity part + context part broadcast,
        # the context part computed once per parent voxel
        first = cast(nn.Linear, self.output[0])
        channels = features.shape[1]
        context_part = F.linear(context, first.weight[:, channels:], first.bias).index_select(0, coarse.parent)
        fused = torch.addmm(context_part, self.identity(features), first.weight[:, :channels].t())
        fused = self.output[2](self.output[1](fused))
        return voxels.transition(scale, out_scale).apply(fused)


class SPVBlock(nn.Module):
    """Voxel branch at `scale` + point branch, fused at `out_scale` (ref §3 items 1-5)."""

    def __init__(self, channels: int, scale: int, out_scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.out_scale = out_scale
        self.voxel_encoder = nn.ModuleList([SparseBasicBlock(channels, channels) for _ in range(2)])
        self.point_encoder = PointEncoder(channels)

    def forward(self, features: Tensor, grid: SparseGrid,
                voxels: MultiScaleVoxels) -> tuple[Tensor, Tensor, Tensor]:
        """features (M_scale, C) -> (voxel branch (M_scale, C), point branch (M_out, C), voxel branch
        averaged to the output scale (M_out, C))."""
        encoded = features
        for block in self.voxel_encoder:
            encoded = block(encoded, grid)
        pooled = voxels.transition(self.scale, self.out_scale).apply(encoded)
        point = self.point_encoder(features + encoded, voxels, self.scale, self.out_scale)
        return encoded, point, pooled


class Student(nn.Module):
    """The student network. `forward(StudentInput) -> StudentOutput`.

    sparse_backend: "auto" (the sparse seam picks: spconv on CUDA, native on the CPU), or "native" /
    "spconv" / "torchsparse".
    """

    def __init__(self, config: StudentConfig = StudentConfig(), sparse_backend: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.sparse_backend = sparse_backend
        channels = config.hidden_channels
        self.input_mlp = nn.Sequential(nn.Linear(config.in_features + OFFSET_FEATURES, channels), nn.ReLU(),
                                       nn.Linear(channels, channels))
        self.stages = nn.ModuleList([SPVBlock(channels, scale, out_scale)
                                     for scale, out_scale in zip(config.input_scales, config.stage_scales)])
        self.classifier = nn.Sequential(nn.Linear(channels * len(config.stage_scales), config.decoder_channels),
                                        nn.ReLU(), nn.Linear(config.decoder_channels, config.num_classes))

    def backend_for(self, device: torch.device) -> str:
        """The sparse backend this forward will use on `device`."""
        return resolve_backend(self.sparse_backend, training=torch.is_grad_enabled(), device=device)

    @property
    def spv_blocks(self) -> list[SPVBlock]:
        """The SPV blocks of `stages`, typed (an nn.ModuleList yields plain Modules)."""
        return [cast(SPVBlock, block) for block in self.stages]

    def prepare_voxels(self, voxels: MultiScaleVoxels) -> None:
        """Derive (and cache in `voxels`) every inter-scale map the forward will use."""
        for block in self.spv_blocks:
            voxels.transition(block.scale, block.out_scale)
            voxels.coarsened(block.scale, CONTEXT_FACTOR)
        voxels.voxel_combinations(self.config.stage_scales)

    def input_features(self, points: Tensor, voxels: MultiScaleVoxels) -> Tensor:
        """(Np, in + 6): points ++ (xyz - voxel mean) ++ (xyz - voxel lower corner) at the base grid."""
        base = voxels[1]
        xyz = points[:, :3]
        mean = base.mean(xyz)
        coords = base.coords.index_select(0, base.point_to_voxel)  # (Np, 4) b z y x
        cell_xyz = coords[:, [3, 2, 1]].to(xyz.dtype)
        config = voxels.config
        cell_size = torch.tensor(config.cell_size(1), dtype=xyz.dtype, device=xyz.device)
        lower = torch.tensor(config.min_bound, dtype=xyz.dtype, device=xyz.device)
        corner = cell_xyz * cell_size + lower
        return torch.cat([points, xyz - mean.index_select(0, base.point_to_voxel), xyz - corner], dim=1)

    def forward(self, batch: StudentInput) -> StudentOutput:
        encoding = self.encode(batch)
        logits = self.decode(encoding.hidden).index_select(0, encoding.point_to_row)
        return StudentOutput(logits=logits, stages=encoding.stages)

    def decode(self, hidden: Tensor) -> Tensor:
        """The decoder after its first Linear: (R, decoder_channels) pre-activation -> (R, num_classes)."""
        return self.classifier[2](self.classifier[1](hidden))

    def encode(self, batch: StudentInput) -> StudentEncoding:
        """Everything up to the decoder's first Linear (per distinct stage-voxel tuple, `StudentEncoding`)."""
        points, voxels = batch.points, batch.voxels
        if points.ndim != 2 or points.shape[1] != self.config.in_features:
            raise ValueError(f"Student: points must be (N, {self.config.in_features}), got {tuple(points.shape)}")
        if points.shape[0] != voxels.num_points:
            raise ValueError(f"Student: {points.shape[0]} points but the voxelisation has {voxels.num_points}")
        base = voxels[1]
        # offsets are computed in the points' precision (fp32), then cast to the weights' (fp16 on GPU)
        inputs = self.input_features(points, voxels).to(cast(nn.Linear, self.input_mlp[0]).weight.dtype)
        hidden = self.input_mlp[1](self.input_mlp[0](inputs))
        features = self.input_mlp[2](base.mean(hidden))

        backend = self.backend_for(points.device)
        channels = self.config.hidden_channels
        decoder = cast(nn.Linear, self.classifier[0])
        decoder_weight = decoder.weight  # (decoder, channels * stages)
        stages: list[StageFeatures] = []
        decoder_parts = []
        for index, block in enumerate(self.spv_blocks):
            level = voxels[block.scale]
            # voxelise() guarantees unique, in-grid coords: skip the grid's own validation sort
            grid = SparseGrid(level.coords, level.spatial_shape, voxels.batch_size, backend=backend,
                              validate=False)
            encoded, point, pooled = block(features, grid, voxels)
            stages.append(StageFeatures(voxel_features=encoded, point_to_voxel=level.point_to_voxel,
                                        scale=block.scale))
            features = point + pooled
            # decoder Linear over the concatenation == sum of its column blocks, applied per voxel
            decoder_parts.append(point @ decoder_weight[:, index * channels:(index + 1) * channels].t())
        # the decoder runs once per distinct (voxel per stage) tuple, then is gathered to the points
        rows, point_to_row = voxels.voxel_combinations(self.config.stage_scales)
        decoded = F.embedding_bag(rows, torch.cat(decoder_parts), mode="sum") + decoder.bias
        return StudentEncoding(stages=stages, hidden=decoded, point_to_row=point_to_row)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
