"""SubMConv3d: one submanifold convolution module whose weights run on every backend."""
from __future__ import annotations

import math

import torch
from torch import nn

from .grid import SparseGrid


class SubMConv3d(nn.Module):
    """Submanifold 3D convolution: output sites are the input sites of ``grid``.

    ``weight``: (out, kz, ky, kx, in), spconv 2.x's layout, the one layout stored in checkpoints (backends
    convert at call time). Offsets are cross-correlation (no flip), as in ``torch.nn.functional.conv3d``
    with padding K//2 evaluated at the active sites. A 1x1x1 kernel is a plain matrix product.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False) -> None:
        super().__init__()
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be positive, got in={in_channels}, out={out_channels}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        k = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, k, k, k, in_channels))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's Conv3d default: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
        fan_in = in * K^3."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size ** 3)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, features: torch.Tensor, grid: SparseGrid) -> torch.Tensor:
        """features (M, in) float, one row per site of ``grid`` -> (M, out)."""
        if features.dim() != 2 or features.shape[1] != self.in_channels:
            raise ValueError(f"features must have shape (M, {self.in_channels}), got {tuple(features.shape)}")
        if features.shape[0] != grid.num_sites:
            raise ValueError(f"features have {features.shape[0]} rows but the grid has {grid.num_sites} sites")
        if features.device != grid.device:
            raise ValueError(f"features are on {features.device} but the grid's coords are on {grid.device}")
        if self.kernel_size == 1:
            out = features @ self.weight.reshape(self.out_channels, self.in_channels).to(features.dtype).t()
        else:
            out = grid.backend.conv(features, self.weight, grid, self.kernel_size)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size},"
                f" bias={self.bias is not None}")


def fold_batch_norm(conv: SubMConv3d, norm: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode ``norm(conv(x))`` as one convolution: (weight (out, K, K, K, in), bias (out,)), float32.

    Uses the running statistics: only valid in inference (see `SparseBackend.fused_conv`).
    """
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("fold_batch_norm needs a BatchNorm with running statistics (track_running_stats)")
    scale = torch.rsqrt(norm.running_var.float() + norm.eps)
    shift = -norm.running_mean.float() * scale
    if norm.weight is not None:
        scale = scale * norm.weight.float()
        shift = shift * norm.weight.float() + norm.bias.float()
    if conv.bias is not None:
        shift = shift + conv.bias.float() * scale
    return conv.weight.float() * scale.view(-1, 1, 1, 1, 1), shift
