"""spconv 2.x backend: spconv's own indice-pair generation and convolution kernels, our weights.

Each grid holds one ``indice_dict``: the first conv of kernel size K on a grid generates spconv's indice
pairs (``ops.get_indice_pairs`` on the CPU, ``ops.get_indice_pairs_implicit_gemm`` on CUDA) under the key
``subm{K}``; every conv then runs spconv's ``SparseConvolutionBase._conv_forward`` (the code behind
``spconv.pytorch.SubMConv3d``) with that key, so it reuses the pairs.
spconv 2.x keeps weights as (out, kz, ky, kx, in) ("KRSC"), the canonical layout: passed through unchanged.

Two limits of spconv 2.3.8 on the CPU, both measured here:
- no backward pass (its backward calls ``torch.cuda``): the output carries a backward that raises a
  clear error instead, and :func:`resolve_backend` never picks spconv for CPU training;
- its CPU convolution (``functional.indice_subm_conv``; the pair generation is fine) gives wrong sums
  when torch runs more than one thread: on a real 60 k-voxel scan, 64 -> 64 channels, errors of 30-45
  on outputs of unit-variance data, different on every call, exact with one thread. CPU calls therefore
  run under ``torch.set_num_threads(1)`` (process-wide, under a lock) and restore the count afterwards.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import torch

SPCONV_CPU_BACKWARD_ERROR = ("spconv has no backward pass on the CPU (spconv 2.x's backward calls torch.cuda): "
                             "build the SparseGrid with backend='native' to train on the CPU, or run this "
                             "forward under torch.no_grad()/torch.inference_mode()")

_THREAD_LOCK = threading.Lock()


def indice_key(kernel_size: int) -> str:
    """The spconv indice key shared by every submanifold conv of one kernel size on a grid."""
    return f"subm{kernel_size}"


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch (and so spconv's CPU ops) on one thread; restores the previous count."""
    with _THREAD_LOCK:
        previous = torch.get_num_threads()
        if previous == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


@functools.cache
def _operator(in_channels: int, out_channels: int, kernel_size: int, cuda: bool):
    """spconv's convolution logic for one shape, without a weight of its own (weights are passed in).

    CUDA: spconv's default algorithm (implicit GEMM); CPU: its native gather-GEMM-scatter, the only
    one it runs on the CPU (a CUDA build would otherwise pick implicit GEMM for CPU tensors too).
    """
    from spconv.core import ConvAlgo
    from spconv.pytorch.conv import SparseConvolutionBase

    return SparseConvolutionBase(3, in_channels, out_channels, kernel_size, stride=1, padding=kernel_size // 2,
                                 bias=False, subm=True, indice_key=indice_key(kernel_size),
                                 algo=None if cuda else ConvAlgo.Native)


class _RaiseOnBackward(torch.autograd.Function):
    """Identity whose backward raises: marks a CPU spconv output that cannot be differentiated."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        raise RuntimeError(SPCONV_CPU_BACKWARD_ERROR)


class SpconvBackend:
    """spconv 2.x kernels (CPU native gather-GEMM-scatter; implicit GEMM on CUDA)."""

    name = "spconv"
    fuses_inference = False

    def _tensor(self, grid, features: torch.Tensor):
        import spconv.pytorch as spconv

        state = grid.backend_state
        if "indice_dict" not in state:
            state["indice_dict"] = {}
        tensor = spconv.SparseConvTensor(features, grid.coords, list(grid.spatial_shape), grid.batch_size)
        tensor.indice_dict = state["indice_dict"]
        return tensor

    def build_map(self, grid, kernel_size: int):
        """spconv's indice pairs for ``kernel_size`` (its own generators), stored under ``subm{K}``."""
        from spconv.core import ConvAlgo
        from spconv.pytorch import ops
        from spconv.pytorch.core import ImplicitGemmIndiceData, IndiceData

        cuda = grid.device.type == "cuda"
        op = _operator(1, 1, kernel_size, cuda)
        tensor = self._tensor(grid, torch.empty((grid.num_sites, 1), device=grid.device))
        shape = list(grid.spatial_shape)
        geometry = dict(ksize=op.kernel_size, stride=op.stride, dilation=op.dilation, padding=op.padding)
        if op.algo == ConvAlgo.Native:
            with _single_thread() if not cuda else contextlib.nullcontext():
                out_ids, pairs, pair_counts = ops.get_indice_pairs(
                    grid.coords, grid.batch_size, shape, op.algo, op.kernel_size, op.stride, op.padding,
                    op.dilation, op.output_padding, True, False)
            data = IndiceData(out_ids, grid.coords, pairs, pair_counts, shape, shape, is_subm=True, algo=op.algo,
                              **geometry)
        else:
            result = ops.get_indice_pairs_implicit_gemm(
                grid.coords, grid.batch_size, shape, op.algo, ksize=op.kernel_size, stride=op.stride,
                padding=op.padding, dilation=op.dilation, out_padding=op.output_padding, subm=True,
                transpose=False, is_train=torch.is_grad_enabled(), alloc=tensor.thrust_allocator,
                timer=tensor._timer)
            data = ImplicitGemmIndiceData(
                result[0], grid.coords, result[2], result[3], pair_mask_fwd_splits=result[4],
                pair_mask_bwd_splits=result[5], mask_argsort_fwd_splits=result[6],
                mask_argsort_bwd_splits=result[7], masks=result[8], is_subm=True, spatial_shape=shape,
                out_spatial_shape=shape, algo=op.algo, **geometry)
        tensor.indice_dict[indice_key(kernel_size)] = data
        return data

    def _run(self, features: torch.Tensor, weight: torch.Tensor, grid, kernel_size: int, *, training: bool):
        operator = _operator(features.shape[1], weight.shape[0], kernel_size, features.is_cuda)
        tensor = self._tensor(grid, features)
        if features.is_cuda:
            return operator._conv_forward(training, tensor, weight, None).features
        with _single_thread():
            return operator._conv_forward(False, tensor, weight, None).features

    def conv(self, features: torch.Tensor, weight: torch.Tensor, grid, kernel_size: int) -> torch.Tensor:
        if features.dtype == torch.bfloat16:  # spconv 2.3.8's tensor bridge has no bfloat16 (KeyError inside)
            raise RuntimeError("sparse backend 'spconv' has no torch.bfloat16 kernels (spconv 2.x: float16, float32, "
                               "float64); use backend 'native' for bf16")
        if grid.num_sites == 0:
            return features.new_zeros((0, weight.shape[0]))
        grid.kernel_map(kernel_size)  # counted once per grid and kernel size
        weight = weight.to(features.dtype)
        if features.is_cuda:
            wants_grad = torch.is_grad_enabled() and (features.requires_grad or weight.requires_grad)
            return self._run(features.contiguous(), weight, grid, kernel_size, training=wants_grad)
        wants_grad = torch.is_grad_enabled() and (features.requires_grad or weight.requires_grad)
        with torch.no_grad():
            out = self._run(features.contiguous(), weight.detach().contiguous(), grid, kernel_size, training=False)
        if wants_grad:
            out = _RaiseOnBackward.apply(out, features, weight)
        return out

    def fused_conv(self, features: torch.Tensor, weight: torch.Tensor, grid, kernel_size: int, *,
                   bias: torch.Tensor, extra: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        raise NotImplementedError("sparse backend 'spconv' has no fused inference convolution (fuses_inference)")
