"""Native backend: submanifold convolution as gather-GEMM-scatter in plain PyTorch (CPU and GPU).

Forward, per kernel offset k with pairs (i, o): ``out[o] += in[i] @ W_k`` where ``W_k`` is (in, out);
the centre offset is a plain matrix product over all sites. Backward is the same loop run the other
way: ``grad_in[i] += grad_out[o] @ W_k^T`` and ``grad_W_k = in[i]^T @ grad_out[o]``. A custom autograd
function keeps only the input features for backward (autograd over the loop would store every gathered
(P_k, C) block) and reuses two scratch buffers for all offsets instead of allocating per offset.
"""
from __future__ import annotations

import torch

from .kernel_map import KernelMap, build_kernel_map


def _offset_weights(weight: torch.Tensor) -> torch.Tensor:
    """Canonical (out, kz, ky, kx, in) -> (K^3, in, out), the right operand of ``features @ W_k``."""
    out_channels, in_channels = weight.shape[0], weight.shape[-1]
    return weight.reshape(out_channels, -1, in_channels).permute(1, 2, 0)


def _max_pairs(kernel_map: KernelMap) -> int:
    return max((int(i.numel()) for i in kernel_map.in_index if i is not None), default=0)


def _gather_gemm_scatter(features: torch.Tensor, weights: torch.Tensor, kernel_map: KernelMap,
                         *, transpose: bool) -> torch.Tensor:
    """Sum over offsets of scatter(gather(features) @ W_k); ``transpose`` runs the map backwards.

    features (M, C_a); weights (K^3, C_a, C_b) -> (M, C_b). With ``transpose`` the pairs are read as
    (output -> input), which is what the gradient with respect to the input needs.
    """
    source_index, target_index = kernel_map.in_index, kernel_map.out_index
    if transpose:
        source_index, target_index = target_index, source_index
    result = features @ weights[kernel_map.centre]
    capacity = _max_pairs(kernel_map)
    if capacity == 0:
        return result
    gathered = features.new_empty((capacity, features.shape[1]))
    product = result.new_empty((capacity, result.shape[1]))
    for k, (source, target) in enumerate(zip(source_index, target_index)):
        if source is None or source.numel() == 0:
            continue
        count = source.numel()
        torch.index_select(features, 0, source, out=gathered[:count])
        torch.mm(gathered[:count], weights[k], out=product[:count])
        result.index_add_(0, target, product[:count])
    return result


def _weight_gradient(features: torch.Tensor, grad_output: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
    """dL/dW_k = in[i]^T @ grad_out[o] per offset -> (K^3, in, out); scratch buffers reused across offsets."""
    per_offset = features.new_zeros((kernel_map.volume, features.shape[1], grad_output.shape[1]))
    torch.mm(features.t(), grad_output, out=per_offset[kernel_map.centre])
    capacity = _max_pairs(kernel_map)
    if capacity == 0:
        return per_offset
    gathered_in = features.new_empty((capacity, features.shape[1]))
    gathered_grad = grad_output.new_empty((capacity, grad_output.shape[1]))
    for k, (source, target) in enumerate(zip(kernel_map.in_index, kernel_map.out_index)):
        if source is None or source.numel() == 0:
            continue
        count = source.numel()
        torch.index_select(features, 0, source, out=gathered_in[:count])
        torch.index_select(grad_output, 0, target, out=gathered_grad[:count])
        torch.mm(gathered_in[:count].t(), gathered_grad[:count], out=per_offset[k])
    return per_offset


class _SubmanifoldConv(torch.autograd.Function):
    """Differentiable submanifold convolution over a precomputed kernel map."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
        weights = _offset_weights(weight)
        ctx.kernel_map = kernel_map
        ctx.weight_shape = weight.shape
        ctx.save_for_backward(features, weight)
        return _gather_gemm_scatter(features, weights, kernel_map, transpose=False)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        features, weight = ctx.saved_tensors
        kernel_map: KernelMap = ctx.kernel_map
        grad_output = grad_output.contiguous()
        grad_features = grad_weight = None
        if ctx.needs_input_grad[0]:
            weights_t = _offset_weights(weight).transpose(1, 2)  # (K^3, out, in)
            grad_features = _gather_gemm_scatter(grad_output, weights_t, kernel_map, transpose=True)
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_gradient(features, grad_output, kernel_map).permute(2, 0, 1).reshape(ctx.weight_shape)
        return grad_features, grad_weight, None


def submanifold_conv(features: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
    """(M, in) features, canonical (out, K, K, K, in) weight -> (M, out); no bias."""
    device_type = features.device.type
    if torch.is_autocast_enabled(device_type):  # run at the autocast dtype, as nn.Linear would
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return _SubmanifoldConv.apply(features.to(dtype).contiguous(), weight.to(dtype), kernel_map)
    if weight.dtype != features.dtype:
        weight = weight.to(features.dtype)
    return _SubmanifoldConv.apply(features.contiguous(), weight, kernel_map)


class NativeBackend:
    """Kernel maps by sorted-key search, convolution by gather-GEMM-scatter; trains on CPU and GPU."""

    name = "native"

    def build_map(self, grid, kernel_size: int) -> KernelMap:
        order = grid.sorted_keys()[1][1] if grid.has_sorted_keys() else None
        return build_kernel_map(grid.coords, grid.spatial_shape, kernel_size, order=order)

    def conv(self, features: torch.Tensor, weight: torch.Tensor, grid, kernel_size: int) -> torch.Tensor:
        return submanifold_conv(features, weight, grid.kernel_map(kernel_size))
