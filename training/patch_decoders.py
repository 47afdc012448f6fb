"""Patch decoders: teacher token maps (B, E, h, w) -> per-pixel features of the crop, and pixel -> point.

The paper's ablation (ref §11, rows b-l) compares four decoders; shapes for ViT-B (E = 768, patch 16)
and the 1024 x 320 crop (h, w = 20, 64), read from ref §4 and the official encoder's `pool_1d` /
`postprocess` options:

* **MaxPool & repeat** / **AvgPool & repeat**: a 1-D max/avg pool over the *channel* axis with
  kernel = stride = E / C (the official code pools (B, h*w, E) with `MaxPool1d(E // C, E // C)` where C is
  its `out_chans` = the student's hidden size 64, i.e. kernel 12: groups of 12 consecutive channels)
  -> (B, C, h, w); then every token is repeated 16 x 16 (`repeat_interleave` by the patch size on both
  axes) -> (B, C, 320, 1024). No parameters.
* **neck & repeat**: SAM's neck design per stage, Conv2d(E->C, 1x1, no bias) -> LayerNorm2d(C) ->
  Conv2d(C->C, 3x3, pad 1, no bias) -> LayerNorm2d(C) -> (B, C, h, w); then repeat 16 x 16.
* **upscaling & interpolate** (ELiTe's choice): ConvTranspose2d(E->E/4, k2 s2) -> LayerNorm2d(E/4,
  eps 1e-6) -> GELU -> ConvTranspose2d(E/4->E/8, k2 s2) -> GELU -> (B, 96, 80, 256), then bilinear
  (align_corners=False) to the crop -> (B, 96, 320, 1024). 664,224 parameters per stage for ViT-B.

The pooled / neck channel count C is a parameter (default `POOLED_CHANNELS` = 64 as in the official
code); the upscaler always gives E/8 = 96. Each decoder exposes `out_channels` for the heads.

Geometry rule shared by all decoders: the map is brought to the token-covered area (h*16, w*16) and
then cropped to the image (H, W) (`[:H, :W]`, as the official code does after repeating). For ELiTe's
320 x 1024 crop both are the same; for a crop height that is not a multiple of 16 this keeps pixels
aligned with their patches instead of stretching the map.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

POOLED_CHANNELS = 64  # ref §4/official: pool/neck out_chans = model_params.hiden_size = 64
UPSCALE_LN_EPS = 1e-6  # ref §4: LayerNorm2d(192, eps 1e-6) (SAM's LayerNorm2d default)
UPSCALE_FACTOR = 4  # two stride-2 transposed convolutions (ref §4)


class DecoderKind(str, Enum):
    """The patch decoders of the ablation (ref §11)."""

    MAXPOOL_REPEAT = "maxpool_repeat"
    AVGPOOL_REPEAT = "avgpool_repeat"
    NECK_REPEAT = "neck_repeat"
    UPSCALE_INTERPOLATE = "upscale_interpolate"


def _crop(features: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    height, width = out_hw
    if features.shape[-2] < height or features.shape[-1] < width:
        raise ValueError(f"decoded map {tuple(features.shape[-2:])} smaller than the requested {out_hw}")
    return features[:, :, :height, :width]


class _RepeatDecoder(nn.Module):
    """Shared tail of the repeat decoders: each token becomes a patch_size x patch_size block."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def reduce(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """tokens (B, E, h, w) -> (B, out_channels, H, W) with (H, W) = out_hw <= (h*p, w*p)."""
        reduced = self.reduce(tokens)
        repeated = reduced.repeat_interleave(self.patch_size, dim=2).repeat_interleave(self.patch_size, dim=3)
        return _crop(repeated, out_hw)


class ChannelPoolRepeat(_RepeatDecoder):
    """Max or average pooling over groups of E/C consecutive channels, then repeat (no parameters)."""

    def __init__(self, embed_dim: int, out_channels: int = POOLED_CHANNELS, patch_size: int = 16,
                 reduction: str = "max") -> None:
        super().__init__(patch_size)
        if embed_dim % out_channels:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of out_channels {out_channels}")
        kernel = embed_dim // out_channels
        if reduction == "max":
            self.pool = nn.MaxPool1d(kernel, kernel)
        elif reduction == "avg":
            self.pool = nn.AvgPool1d(kernel, kernel)
        else:
            raise ValueError(f"reduction must be 'max' or 'avg', got {reduction!r}")
        self.out_channels = out_channels

    def reduce(self, tokens: torch.Tensor) -> torch.Tensor:
        b, e, h, w = tokens.shape
        flat = tokens.permute(0, 2, 3, 1).reshape(b, h * w, e)  # pool along the channel axis
        return self.pool(flat).reshape(b, h, w, self.out_channels).permute(0, 3, 1, 2)


class NeckRepeat(_RepeatDecoder):
    """SAM-style neck (1x1 conv, LN2d, 3x3 conv, LN2d) to C channels, then repeat."""

    def __init__(self, embed_dim: int, out_channels: int = POOLED_CHANNELS, patch_size: int = 16) -> None:
        super().__init__(patch_size)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_channels, kernel_size=1, bias=False),
            LayerNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_channels),
        )
        self.out_channels = out_channels

    def reduce(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.neck(tokens)


class UpscaleInterpolate(nn.Module):
    """ELiTe's patch decoder: x4 transposed-conv upscaler (SAM mask-decoder style) + bilinear resize."""

    def __init__(self, embed_dim: int, patch_size: int = 16) -> None:
        super().__init__()
        if embed_dim % 8:
            raise ValueError(f"embed_dim {embed_dim} must be a multiple of 8")
        self.patch_size = patch_size
        self.out_channels = embed_dim // 8
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(embed_dim // 4, eps=UPSCALE_LN_EPS),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim // 4, embed_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )

    def forward(self, tokens: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """tokens (B, E, h, w) -> (B, E/8, H, W): upscale to (4h, 4w), bilinear to (h*p, w*p), crop."""
        up = self.upscale(tokens)
        covered = (tokens.shape[-2] * self.patch_size, tokens.shape[-1] * self.patch_size)
        resized = F.interpolate(up, size=covered, mode="bilinear", align_corners=False)
        return _crop(resized, out_hw)


def build_patch_decoder(kind: DecoderKind | str, embed_dim: int, *, out_channels: int = POOLED_CHANNELS,
                        patch_size: int = 16) -> nn.Module:
    """One decoder of `kind` (`out_channels` applies to the pooling and neck decoders only)."""
    kind = DecoderKind(kind)
    if kind is DecoderKind.MAXPOOL_REPEAT:
        return ChannelPoolRepeat(embed_dim, out_channels, patch_size, reduction="max")
    if kind is DecoderKind.AVGPOOL_REPEAT:
        return ChannelPoolRepeat(embed_dim, out_channels, patch_size, reduction="avg")
    if kind is DecoderKind.NECK_REPEAT:
        return NeckRepeat(embed_dim, out_channels, patch_size)
    return UpscaleInterpolate(embed_dim, patch_size)


class PatchDecoders(nn.Module):
    """One decoder per teacher stage (`output_upscaling[k]` in the official code)."""

    def __init__(self, kind: DecoderKind | str, embed_dim: int, num_stages: int = 4, *,
                 out_channels: int = POOLED_CHANNELS, patch_size: int = 16) -> None:
        super().__init__()
        self.kind = DecoderKind(kind)
        self.stages = nn.ModuleList(
            build_patch_decoder(kind, embed_dim, out_channels=out_channels, patch_size=patch_size)
            for _ in range(num_stages)
        )
        self.out_channels = self.stages[0].out_channels

    def forward(self, taps: Sequence[torch.Tensor], out_hw: tuple[int, int]) -> list[torch.Tensor]:
        """taps: per stage (B, E, h, w) -> per stage (B, out_channels, H, W), (H, W) = out_hw pixels."""
        if len(taps) != len(self.stages):
            raise ValueError(f"{len(taps)} teacher stages for {len(self.stages)} decoders")
        return [decoder(tap, out_hw) for decoder, tap in zip(self.stages, taps)]


def gather_pixels(features: torch.Tensor, pixels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pixel -> point: features (B, C, H, W) sampled at each sample's integer pixels.

    pixels: per sample b a (N_b, 2) int64 tensor of (row, col) inside the crop (the projected points,
    ``img_indices`` in the reference). Returns (sum N_b, C), samples concatenated in order.
    """
    b, c, height, width = features.shape
    if len(pixels) != b:
        raise ValueError(f"{len(pixels)} pixel lists for a batch of {b}")
    gathered = []
    for index, rc in enumerate(pixels):
        rc = torch.as_tensor(rc, device=features.device).long()
        if rc.ndim != 2 or rc.shape[1] != 2:
            raise ValueError(f"pixels[{index}] must be (N, 2) (row, col), got {tuple(rc.shape)}")
        if rc.numel() and (rc.min() < 0 or rc[:, 0].max() >= height or rc[:, 1].max() >= width):
            raise ValueError(f"pixels[{index}] outside the {height}x{width} feature map")
        gathered.append(features[index, :, rc[:, 0], rc[:, 1]].T)
    return torch.cat(gathered, 0)
