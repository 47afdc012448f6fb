"""The U2MKD fusion student: the LiDAR student + a light image branch, fused both ways, with imputation.

Sun et al., "Uni-to-Multi Modal Knowledge Distillation for Bidirectional LiDAR-Camera Semantic
Segmentation" (TPAMI 2024) in the form of docs/reference.md §14 (only the abstract is available; every
size and wiring below is this package's choice and says so there):

1. 3D branch: the ELiTe `Student` unchanged (`lidar.*`), so a LiDAR-only checkpoint loads into it with
   every key (`load_lidar_checkpoint`); its decoder is shared: the fusion adds to the decoder's hidden
   layer, so with `to_decoder`'s last layer at zero (its initial value) the fusion student is the LiDAR
   student exactly.
2. Image branch (`ImageBranch`): the normalised camera image average-pooled by `image.downsample`, a
   4-level CNN (3x3 conv + BN + ReLU, stride 2 per level) and a top-down path of 1x1 laterals summed with
   bilinear upsampling, ending at 1/4 of the pooled image (1/8 of the camera's pixels by default) with a
   BatchNorm: (B, image.channels, Hf, Wf).
3. Pixel -> point: every point with a pixel (`FusionInput.pixels`, the projection of its un-augmented
   coordinates) reads the image features there, bilinearly, at the pixel's centre.
4. Imputation head (`impute`): image features predicted from the point's 3D feature (the decoder's
   hidden layer after its ReLU) for points without a pixel, and for every point of a scan without image.
5. Fusion both ways: image -> points (the real or imputed image feature, through `to_decoder`, added to
   the decoder's hidden layer) and points -> image plane -> back (`PointsToImage`: the points' 3D features
   scatter-averaged onto the image feature grid, concatenated with the image features and an occupancy
   channel, one 3x3 conv + BN + ReLU, read back at each point's cell and added to its image feature).
6. The decoder (the 3D branch's): ReLU -> Linear(decoder_channels, num_classes).

Points without a pixel (outside the camera's field of view, or in a scan without image) go through
(1, 4, 6) only: their logits are computed from 3D features alone, per distinct stage-voxel tuple as in the
LiDAR student, so they do not depend on the image at all. Points with a pixel in a scan with image get
their own logits from (3, 5, 6).

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .student import MAX_CHANNELS, MAX_STAGES, Student, StudentConfig, StudentInput, StudentOutput
from .voxel import MultiScaleVoxels

MODEL_KIND = "fusion"  # checkpoint metadata `model_kind` of this network (the LiDAR student is "lidar")
IMAGE_WIDTHS = (16, 32, 64, 96)  # ref §14: channels of the image branch's four stride-2 levels (ours)
IMAGE_CHANNELS = 64  # ref §14: image feature channels per pixel / point (ours; = the 3D branch's width)
IMAGE_DOWNSAMPLE = 2  # ref §14: the camera image enters the CNN average-pooled 2x (621 x 188 for KITTI)
OUTPUT_LEVEL = 1  # ref §14: the image features come out at level 1 (1/4 of the pooled image)
MAX_IMAGE_DOWNSAMPLE = 64  # a checkpoint's bound: a 1242-pixel KITTI row pooled to 19 pixels
IMPUTATION_HIDDEN = 64  # ref §14: imputation head Linear(decoder, 64) -> ReLU -> Linear(64, image.channels)


@dataclass(frozen=True)
class ImageFusionConfig:
    """The image branch and the fusion wiring (the part of the fusion student the LiDAR student lacks).

    widths: channels of the image CNN's levels (each halves the resolution). channels: image feature
    width. downsample: integer average pooling of the camera image before the CNN. imputation: False = the
    ablation with zeros for missing image features (no imputation head). points_to_image: False = the
    ablation without the points -> image plane -> points direction.
    """

    widths: tuple[int, ...] = IMAGE_WIDTHS
    channels: int = IMAGE_CHANNELS
    downsample: int = IMAGE_DOWNSAMPLE
    imputation: bool = True
    points_to_image: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not OUTPUT_LEVEL + 1 <= len(self.widths) <= MAX_STAGES or any(not 1 <= w <= MAX_CHANNELS
                                                                          for w in self.widths):
            raise ValueError(f"ImageFusionConfig.widths must hold {OUTPUT_LEVEL + 1}..{MAX_STAGES} widths in "
                             f"1..{MAX_CHANNELS}, got {self.widths}")
        for name, limit in (("channels", MAX_CHANNELS), ("downsample", MAX_IMAGE_DOWNSAMPLE)):
            if not 1 <= int(getattr(self, name)) <= limit:
                raise ValueError(f"ImageFusionConfig.{name} must lie in 1..{limit}, got {getattr(self, name)}")

    @property
    def feature_stride(self) -> int:
        """Camera pixels per image-feature cell along each axis (8 by default)."""
        return self.downsample * 2 ** (OUTPUT_LEVEL + 1)


@dataclass(frozen=True)
class FusionConfig:
    """Architecture of the fusion student (what its checkpoint's `architecture` says): lidar, the 3D branch
    (a LiDAR-only checkpoint of this config loads into it), and image, the image branch and fusion."""

    lidar: StudentConfig = field(default_factory=StudentConfig)
    image: ImageFusionConfig = field(default_factory=ImageFusionConfig)


@dataclass
class FusionInput:
    """One batch for the fusion student.

    points: (Np, in_features) float, x y z metres + intensity (the 3D branch's input).
    voxels: their multi-scale voxelisation (`voxel.voxelise`), batch index inside.
    images: (B, 3, H, W) float normalised RGB (`camera.normalise_image`), zero-padded bottom / right to a
      common size, or None (no scan has an image: every point runs on the imputation path).
    image_present: (B,) bool which samples' images are inputs (None = all, when `images` is given); a
      withheld image (False) still yields `FusionOutput.image_features` (the imputation loss's target).
    pixel_points: (M,) int64 rows of `points` that project into their sample's image.
    pixels: (M, 2) int64 (row, col) of those points in their image (`camera.project_points`).
    """

    points: Tensor
    voxels: MultiScaleVoxels
    images: Tensor | None = None
    image_present: Tensor | None = None
    pixel_points: Tensor | None = None
    pixels: Tensor | None = None

    def student_input(self) -> StudentInput:
        return StudentInput(points=self.points, voxels=self.voxels)


@dataclass
class FusionOutput(StudentOutput):
    """StudentOutput (logits (Np, C), the 3D branch's stages) plus, at `FusionInput.pixel_points`:
    image_features (M, image.channels) read from the image, imputed (M, image.channels) the imputation
    head's prediction for the same points; each None when there are no images / no imputation head."""

    image_features: Tensor | None = None
    imputed: Tensor | None = None


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d -> ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ImageBranch(nn.Module):
    """Camera image (B, 3, H, W) normalised -> image features (B, channels, Hf, Wf), Hf = ceil(H / stride).

    Level k (k = 0..L-1) halves the resolution: level 0 is one stride-2 conv, the others a stride-2 conv and
    a 3x3 conv; a top-down path of 1x1 laterals (summed after bilinear upsampling) goes from the last level
    down to `OUTPUT_LEVEL`, then BatchNorm.
    """

    def __init__(self, config: ImageFusionConfig) -> None:
        super().__init__()
        self.downsample = config.downsample
        widths = config.widths
        levels = [conv_bn_relu(3, widths[0], stride=2)]
        levels += [nn.Sequential(conv_bn_relu(a, b, stride=2), conv_bn_relu(b, b)) for a, b in zip(widths, widths[1:])]
        self.levels = nn.ModuleList(levels)
        self.laterals = nn.ModuleList([nn.Conv2d(w, config.channels, 1) for w in widths[OUTPUT_LEVEL:]])
        self.norm = nn.BatchNorm2d(config.channels)

    def forward(self, images: Tensor) -> Tensor:
        x = images
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample, ceil_mode=True)
        outputs = []
        for level in self.levels:
            x = level(x)
            outputs.append(x)
        laterals = list(self.laterals)  # laterals[k] belongs to level OUTPUT_LEVEL + k
        top = laterals[-1](outputs[-1])
        for index in range(len(outputs) - 2, OUTPUT_LEVEL - 1, -1):
            features = outputs[index]
            top = laterals[index - OUTPUT_LEVEL](features) + F.interpolate(
                top, size=features.shape[-2:], mode="bilinear", align_corners=False)
        return self.norm(top)


def sample_at_pixels(features: Tensor, pixels: Tensor, sample: Tensor, stride: int) -> Tensor:
    """Bilinear image features at pixel centres: features (B, C, Hf, Wf), pixels (M, 2) int64 (row, col) in
    camera pixels, sample (M,) int64 batch sample of each -> (M, C). Cell j of the grid spans camera pixels
    [j stride, (j + 1) stride); coordinates past the grid's edge read its border."""
    b, channels, height, width = features.shape
    xy = (pixels.flip(1).to(features.dtype) + 0.5) / stride  # (M, 2) x, y in feature cells
    grid = torch.stack([2.0 * xy[:, 0] / width - 1.0, 2.0 * xy[:, 1] / height - 1.0], dim=1)
    out = features.new_zeros((pixels.shape[0], channels))
    for index in range(b):
        rows = torch.nonzero(sample == index).flatten()
        if rows.numel() == 0:
            continue
        sampled = F.grid_sample(features[index:index + 1], grid.index_select(0, rows).view(1, 1, -1, 2),
                                mode="bilinear", padding_mode="border", align_corners=False)  # (1, C, 1, m)
        out = out.index_copy(0, rows, sampled[0, :, 0].t())
    return out


def pixel_cells(pixels: Tensor, sample: Tensor, stride: int, shape: tuple[int, int, int]) -> Tensor:
    """(M,) int64 flat index (sample, row // stride, col // stride) into a (B, Hf, Wf) grid (clamped)."""
    _, height, width = shape
    rows = torch.div(pixels[:, 0], stride, rounding_mode="floor").clamp(0, height - 1)
    cols = torch.div(pixels[:, 1], stride, rounding_mode="floor").clamp(0, width - 1)
    return (sample * height + rows) * width + cols


class PointsToImage(nn.Module):
    """Points -> image plane -> points: 3D features (M, D) scatter-averaged onto the (B, C, Hf, Wf) image
    feature grid at each point's cell, concatenated with the image features and the cell's occupancy
    (1 where a point landed), a 3x3 conv + BN + ReLU, read back at each point's cell -> (M, C)."""

    def __init__(self, point_channels: int, image_channels: int) -> None:
        super().__init__()
        self.project = nn.Linear(point_channels, image_channels)
        self.mix = conv_bn_relu(2 * image_channels + 1, image_channels)

    def forward(self, image_features: Tensor, point_features: Tensor, cells: Tensor) -> Tensor:
        b, channels, height, width = image_features.shape
        projected = self.project(point_features)  # (M, C)
        sums = projected.new_zeros((b * height * width, channels)).index_add(0, cells, projected)
        counts = torch.bincount(cells, minlength=b * height * width).to(projected.dtype).unsqueeze(1)
        plane = (sums / counts.clamp_min(1.0)).view(b, height, width, channels).permute(0, 3, 1, 2)
        occupancy = (counts > 0).to(projected.dtype).view(b, 1, height, width)
        mixed = self.mix(torch.cat([image_features, plane, occupancy], dim=1))  # (B, C, Hf, Wf)
        return mixed.permute(0, 2, 3, 1).reshape(-1, channels).index_select(0, cells)


class FusionStudent(nn.Module):
    """The fusion student. `forward(FusionInput) -> FusionOutput` (see the module docstring).

    sparse_backend: the 3D branch's (`Student`'s) sparse backend.
    """

    model_kind = MODEL_KIND

    def __init__(self, config: FusionConfig = FusionConfig(), sparse_backend: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.lidar = Student(config.lidar, sparse_backend=sparse_backend)
        decoder = config.lidar.decoder_channels
        channels = config.image.channels
        self.image = ImageBranch(config.image)
        self.impute = (nn.Sequential(nn.Linear(decoder, IMPUTATION_HIDDEN), nn.ReLU(),
                                     nn.Linear(IMPUTATION_HIDDEN, channels)) if config.image.imputation else None)
        self.points_to_image = PointsToImage(decoder, channels) if config.image.points_to_image else None
        self.to_decoder = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, decoder))
        last = cast(nn.Linear, self.to_decoder[2])
        nn.init.zeros_(last.weight)  # start as the LiDAR student: no image contribution until trained
        nn.init.zeros_(last.bias)

    @property
    def sparse_backend(self) -> str:
        return self.lidar.sparse_backend

    def backend_for(self, device: torch.device) -> str:
        """The 3D branch's sparse backend on `device`."""
        return self.lidar.backend_for(device)

    def prepare_voxels(self, voxels: MultiScaleVoxels) -> None:
        """Derive the 3D branch's inter-scale maps (`Student.prepare_voxels`)."""
        self.lidar.prepare_voxels(voxels)

    def load_lidar_checkpoint(self, path: str | Path) -> None:
        """Load a LiDAR-only checkpoint (model_kind 'lidar', architecture = `config.lidar`) into the 3D branch,
        strictly: every key of the file and of the branch must match (`checkpoint.load_checkpoint`)."""
        from .checkpoint import load_checkpoint

        load_checkpoint(path, self.lidar)

    def forward(self, batch: FusionInput) -> FusionOutput:
        encoding = self.lidar.encode(batch.student_input())
        hidden, point_to_row = encoding.hidden, encoding.point_to_row
        features = F.relu(hidden)  # (U, decoder): the 3D feature of each stage-voxel tuple
        channels = self.config.image.channels
        imputed_rows = self.impute(features) if self.impute is not None else None
        missing = imputed_rows if imputed_rows is not None else features.new_zeros((features.shape[0], channels))
        # the imputation path: every point, per tuple, from 3D features only
        logits = self.lidar.decode(hidden + self.to_decoder(missing)).index_select(0, point_to_row)
        output = FusionOutput(logits=logits, stages=encoding.stages)
        if batch.images is None or batch.pixel_points is None or batch.pixels is None:
            return output
        pixel_points, pixels = batch.pixel_points, batch.pixels
        weight_dtype = self.image.norm.weight.dtype
        image_features = self.image(batch.images.to(weight_dtype))
        sample = batch.voxels.batch_index.index_select(0, pixel_points)
        rows = point_to_row.index_select(0, pixel_points)
        stride = self.config.image.feature_stride
        at_pixels = sample_at_pixels(image_features, pixels, sample, stride)
        output.image_features = at_pixels
        if imputed_rows is not None:
            output.imputed = imputed_rows.index_select(0, rows)
        present = batch.image_present
        used = (torch.ones_like(sample, dtype=torch.bool) if present is None
                else present.to(sample.device).index_select(0, sample))
        chosen = torch.nonzero(used).flatten()
        if chosen.numel() == 0:
            return output
        fused = at_pixels.index_select(0, chosen)
        if self.points_to_image is not None:
            cells = pixel_cells(pixels.index_select(0, chosen), sample.index_select(0, chosen), stride,
                                (image_features.shape[0], image_features.shape[2], image_features.shape[3]))
            fused = fused + self.points_to_image(image_features, features.index_select(0, rows.index_select(0, chosen)),
                                                 cells)
        chosen_rows = rows.index_select(0, chosen)
        point_logits = self.lidar.decode(hidden.index_select(0, chosen_rows) + self.to_decoder(fused))
        output.logits = logits.index_copy(0, pixel_points.index_select(0, chosen), point_logits.to(logits.dtype))
        return output
