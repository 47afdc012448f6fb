"""The ELiTe image teacher's encoder: SAM's ViT image encoder with split q/k/v, no neck, the token cut and
stage taps ("ref §N" = docs/reference.md §N).

What differs from `segment_anything.modeling.ImageEncoderViT` (ref §4):

* the fused ``attn.qkv`` Linear is replaced by three Linear modules ``q_proj``, ``k_proj``, ``v_proj``
  so that LoRA/AdaLoRA can put one adapter on each (ref §5); SAM's relative-position helper
  (`add_decomposed_rel_pos`) is imported and reused as is;
* the 256-channel ``neck`` is removed right after construction: it is never run, never loaded, and its
  checkpoint keys are counted as intentionally unused;
* the **token cut** (ref §4): only the ceil(H/16) x ceil(W/16) tokens that cover the image crop are
  kept (20 x 64 = 1,280 tokens for a 1024 x 320 crop instead of 4,096). The top-left part of the absolute
  position embedding is added. In the global-attention blocks SAM's `get_rel_pos` then linearly
  interpolates the vertical relative-position table from 2*64-1 = 127 to 2*20-1 = 39 entries, exactly as
  in the official code (``rel_pos_cut="interpolate"``, the default); ``rel_pos_cut="slice"`` keeps the
  central 39 trained entries instead (a conscious alternative, not the paper's);
* forward returns the token maps after the tap blocks (the global-attention blocks 2, 5, 8, 11 for ViT-B)
  as (B, C, h, w) maps cropped to the tokens that cover the image, whether the cut is on or not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, ImageEncoderViT, add_decomposed_rel_pos
from torch import nn

from elite_ros_training.sam_input import SAM_INPUT_SIZE

#: SAM's LayerNorm epsilon (build_sam: partial(nn.LayerNorm, eps=1e-6); ELiTe arch_elite the same).
LAYER_NORM_EPS = 1e-6  # ref §4

RelPosCut = Literal["interpolate", "slice"]


@dataclass(frozen=True)
class TeacherConfig:
    """Geometry of the SAM ViT image encoder and the ELiTe options around it.

    The defaults are SAM ViT-B as used by ELiTe (ref §4). `vit_l()` / `vit_h()` give SAM's other
    geometries (from `segment_anything.build_sam`).
    """

    img_size: int = SAM_INPUT_SIZE  # SAM pre-training input side, pixels (abs pos-embed is img_size/patch square)
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    #: Blocks after which features are tapped; None = the global-attention blocks (ELiTe's choice).
    tap_indexes: tuple[int, ...] | None = None
    #: Keep only the tokens covering the crop (ref §4 "cut"); False runs all (img_size/patch)^2 tokens.
    token_cut: bool = True
    #: How a too-long relative-position table is fitted to a cut token grid (see module docstring).
    rel_pos_cut: RelPosCut = "interpolate"

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        for name, indexes in (("global_attn_indexes", self.global_attn_indexes), ("tap_indexes", self.taps)):
            bad = [i for i in indexes if not 0 <= i < self.depth]
            if bad:
                raise ValueError(f"{name} {bad} outside 0..{self.depth - 1}")
        if self.rel_pos_cut not in ("interpolate", "slice"):
            raise ValueError(f"rel_pos_cut must be 'interpolate' or 'slice', got {self.rel_pos_cut!r}")

    @property
    def taps(self) -> tuple[int, ...]:
        """Indexes of the blocks whose outputs are returned, ascending."""
        return tuple(sorted(self.global_attn_indexes if self.tap_indexes is None else self.tap_indexes))

    @property
    def grid_size(self) -> int:
        """Tokens per side of SAM's full input (64 for 1024 / 16)."""
        return self.img_size // self.patch_size

    @classmethod
    def vit_b(cls, **overrides: Any) -> TeacherConfig:
        return cls(**overrides)

    @classmethod
    def vit_l(cls, **overrides: Any) -> TeacherConfig:
        geometry = dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23))
        return cls(**{**geometry, **overrides})

    @classmethod
    def vit_h(cls, **overrides: Any) -> TeacherConfig:
        geometry = dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31))
        return cls(**{**geometry, **overrides})


def centre_slice_rel_pos(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """The central 2*size-1 rows of a (L, C) relative-position table (L odd, >= 2*size-1).

    Row (L-1)/2 is relative distance 0; slicing keeps the trained entries for distances -(size-1)..size-1.
    """
    needed = 2 * size - 1
    centre = (rel_pos.shape[0] - 1) // 2
    if rel_pos.shape[0] < needed:
        raise ValueError(f"relative-position table of {rel_pos.shape[0]} rows cannot cover {size} tokens")
    return rel_pos[centre - (size - 1): centre + size]


class SplitQKVAttention(Attention):
    """SAM's multi-head attention with separate ``q_proj``, ``k_proj``, ``v_proj`` Linear layers.

    Same maths as `segment_anything.modeling.image_encoder.Attention` (scaled dot product, decomposed
    relative positions through SAM's own `add_decomposed_rel_pos`); input and output (B, H, W, dim).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, use_rel_pos: bool = True,
                 rel_pos_zero_init: bool = True, input_size: tuple[int, int] | None = None,
                 rel_pos_cut: RelPosCut = "interpolate") -> None:
        super().__init__(dim, num_heads=num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos,
                         rel_pos_zero_init=rel_pos_zero_init, input_size=input_size)
        del self.qkv  # the fused projection is replaced by three Linear layers of the same total shape
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.rel_pos_cut = rel_pos_cut

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B * heads, H * W, head_dim), SAM's layout."""
        b, h, w, _ = x.shape
        return x.reshape(b, h * w, self.num_heads, -1).permute(0, 2, 1, 3).reshape(b * self.num_heads, h * w, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            rel_h, rel_w = self.rel_pos_h, self.rel_pos_w
            if self.rel_pos_cut == "slice":
                if rel_h.shape[0] > 2 * h - 1:
                    rel_h = centre_slice_rel_pos(rel_h, h)
                if rel_w.shape[0] > 2 * w - 1:
                    rel_w = centre_slice_rel_pos(rel_w, w)
            # "interpolate": SAM's get_rel_pos resizes the table linearly (127 -> 39 for 20 rows, ref §4).
            attn = add_decomposed_rel_pos(attn, q, rel_h, rel_w, (h, w), (h, w))
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(x)


class SamTeacherEncoder(ImageEncoderViT):
    """SAM's `ImageEncoderViT` without neck, with split q/k/v, the token cut and stage taps.

    forward(images (B, 3, H, W) float32 SAM-normalised, valid_hw=None) -> list over `config.taps` of
    (B, embed_dim, ceil(h/16), ceil(w/16)) token maps, where (h, w) = valid_hw or (H, W) is the image
    content (top-left; anything right/below it is padding). For ELiTe's 1024 x 320 crop with ViT-B:
    four maps of (B, 768, 20, 64).
    """

    def __init__(self, config: TeacherConfig | None = None) -> None:
        config = config or TeacherConfig()
        super().__init__(
            img_size=config.img_size, patch_size=config.patch_size, in_chans=config.in_chans,
            embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio, qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=LAYER_NORM_EPS), act_layer=nn.GELU,
            use_abs_pos=True, use_rel_pos=True, rel_pos_zero_init=True,
            window_size=config.window_size, global_attn_indexes=config.global_attn_indexes,
        )
        del self.neck  # ref §4: SAM's 256-channel neck is not part of the teacher
        self.teacher_config = config
        for index, block in enumerate(self.blocks):
            is_global = index in config.global_attn_indexes
            side = config.grid_size if is_global else config.window_size
            block.attn = SplitQKVAttention(
                config.embed_dim, num_heads=config.num_heads, qkv_bias=True, use_rel_pos=True,
                rel_pos_zero_init=True, input_size=(side, side), rel_pos_cut=config.rel_pos_cut,
            )

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """Token rows and columns covering an image of height x width pixels (ceil division)."""
        p = self.teacher_config.patch_size
        return math.ceil(height / p), math.ceil(width / p)

    def forward(self, images: torch.Tensor, valid_hw: tuple[int, int] | None = None) -> list[torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != self.teacher_config.in_chans:
            raise ValueError(f"images must be (B, {self.teacher_config.in_chans}, H, W), got {tuple(images.shape)}")
        height, width = valid_hw if valid_hw is not None else images.shape[-2:]
        size, p = self.teacher_config.img_size, self.teacher_config.patch_size
        if not (0 < height <= min(size, images.shape[-2]) and 0 < width <= min(size, images.shape[-1])):
            raise ValueError(f"image content {height}x{width} must fit in the input {tuple(images.shape[-2:])} "
                             f"and in SAM's {size}x{size} frame")
        rows, cols = self.token_grid(height, width)
        # With the cut only the patches covering the content are embedded (identical to embedding the
        # zero-padded 1024^2 image and keeping the top-left rows x cols tokens); without it SAM's full
        # zero-padded square is processed and the padding tokens take part in attention.
        out_h, out_w = (rows * p, cols * p) if self.teacher_config.token_cut else (size, size)
        x = images[:, :, :out_h, :out_w]
        x = F.pad(x, (0, out_w - x.shape[-1], 0, out_h - x.shape[-2]))
        x = self.patch_embed(x)  # (B, h, w, C)
        if self.pos_embed is not None:
            x = x + self.pos_embed[:, : x.shape[1], : x.shape[2]]
        taps, tap_set = [], set(self.teacher_config.taps)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in tap_set:
                taps.append(x[:, :rows, :cols].permute(0, 3, 1, 2))
        return taps
