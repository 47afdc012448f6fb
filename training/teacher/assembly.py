"""The whole ELiTe teacher: the SAM encoder tuned by a PEFT mode plus one patch decoder per stage
("ref §N" = docs/reference.md §N)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from elite_ros_training.teacher.encoder import SamTeacherEncoder, TeacherConfig
from elite_ros_training.teacher.sam_weights import load_sam_encoder_weights


class ImageTeacher(nn.Module):
    """SAM encoder (tuned by a PEFT mode) + patch decoders: images -> per-stage pixel or point features.

    forward(images (B, 3, H, W) SAM-normalised, pixels=None, valid_hw=None):
      * pixels None: list over stages of dense maps (B, C, H, W) (for SAM-PLG pseudo-label losses);
      * pixels = per sample (N_b, 2) int64 (row, col): list over stages of (sum N_b, C) point features.
    The decoders are outside the PEFT wrapper and always trainable (ref §5).
    """

    def __init__(self, encoder: nn.Module, decoders: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoders = decoders
        for param in self.decoders.parameters():
            param.requires_grad_(True)

    @property
    def out_channels(self) -> int:
        return self.decoders.out_channels

    def forward(self, images: torch.Tensor, pixels=None, valid_hw: tuple[int, int] | None = None) -> list[torch.Tensor]:
        from elite_ros_training.patch_decoders import gather_pixels

        out_hw = valid_hw if valid_hw is not None else tuple(images.shape[-2:])
        maps = self.decoders(self.encoder(images, valid_hw=valid_hw), out_hw)
        if pixels is None:
            return maps
        return [gather_pixels(stage, pixels) for stage in maps]

    def update_and_allocate(self, global_step: int) -> None:
        """AdaLoRA rank allocation (after backward, before zero_grad); no-op for other modes."""
        from elite_ros_training.peft_modes import update_and_allocate

        update_and_allocate(self.encoder, global_step)

    def regularization_loss(self) -> torch.Tensor:
        """0.1 x AdaLoRA orthogonal regulariser (0 for other modes): add it to the training loss."""
        from elite_ros_training.peft_modes import orthogonal_regularization_loss

        return orthogonal_regularization_loss(self.encoder)


def build_teacher(config: TeacherConfig | None = None, *, mode: str = "adalora", decoder: str = "upscale_interpolate",
                  checkpoint: str | Path | Mapping[str, torch.Tensor] | None = None, total_step: int | None = None,
                  pooled_channels: int | None = None) -> ImageTeacher:
    """The ELiTe teacher (defaults: ViT-B, token cut, AdaLoRA, upscaling decoders, ref §4/§5).

    `checkpoint` (a SAM .pth or state dict) is loaded strictly before the PEFT mode is applied; without
    it the encoder keeps random weights (tests, benchmarks). AdaLoRA needs `total_step`.
    """
    from elite_ros_training.patch_decoders import POOLED_CHANNELS, PatchDecoders
    from elite_ros_training.peft_modes import apply_tuning_mode

    config = config or TeacherConfig()
    encoder = SamTeacherEncoder(config)
    if checkpoint is not None:
        load_sam_encoder_weights(encoder, checkpoint)
    tuned = apply_tuning_mode(encoder, mode, total_step=total_step)
    decoders = PatchDecoders(decoder, config.embed_dim, len(config.taps), patch_size=config.patch_size,
                             out_channels=pooled_channels or POOLED_CHANNELS)
    return ImageTeacher(tuned, decoders)
