"""spconv 2.x backend: spconv's own indice-pair generation and convolution kernels, our weights.

Each grid holds one ``spconv.pytorch.SparseConvTensor`` and its ``indice_dict``; a convolution of kernel
size K runs spconv's ``SparseConvolutionBase._conv_forward`` (the code behind ``spconv.pytorch.SubMConv3d``)
with the indice key ``subm{K}``, so the first conv of that size builds the pairs and the rest reuse them.
spconv 2.x keeps weights as (out, kz, ky, kx, in) ("KRSC"), the canonical layout: passed through unchanged.

Two limits of spconv 2.3.8 on the CPU, both measured here:
- no backward pass (its backward calls ``torch.cuda``): the output carries a backward that raises a
  clear error instead, and :func:`resolve_backend` never picks spconv for CPU training;
- its CPU convolution gives wrong sums when torch runs more than one thread (a race in its
  gather/scatter; errors of tens on unit-variance data, different on every call), so CPU calls run
  with ``torch.set_num_threads(1)`` and restore the previous count afterwards.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Iterator

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
def _operator(in_channels: int, out_channels: int, kernel_size: int):
    """spconv's convolution logic for one shape, without a weight of its own (weights are passed in)."""
    from spconv.pytorch.conv import SparseConvolutionBase

    return SparseConvolutionBase(3, in_channels, out_channels, kernel_size, stride=1, padding=kernel_size // 2,
                                 bias=False, subm=True, indice_key=indice_key(kernel_size))


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

    def _tensor(self, grid, features: torch.Tensor):
        import spconv.pytorch as spconv

        state = grid.backend_state
        if "indice_dict" not in state:
            state["indice_dict"] = {}
        tensor = spconv.SparseConvTensor(features, grid.coords, list(grid.spatial_shape), grid.batch_size)
        tensor.indice_dict = state["indice_dict"]
        return tensor

    def build_map(self, grid, kernel_size: int):
        """Generate spconv's indice pairs for ``kernel_size`` by running one conv on zero features."""
        key = indice_key(kernel_size)
        dict_ = grid.backend_state.setdefault("indice_dict", {})
        if key not in dict_:
            zeros = torch.zeros((grid.num_sites, 1), device=grid.device)
            weight = torch.zeros((1, kernel_size, kernel_size, kernel_size, 1), device=grid.device)
            self._run(zeros, weight, grid, kernel_size, training=torch.is_grad_enabled())
        return dict_[key]

    def _run(self, features: torch.Tensor, weight: torch.Tensor, grid, kernel_size: int, *, training: bool):
        operator = _operator(features.shape[1], weight.shape[0], kernel_size)
        tensor = self._tensor(grid, features)
        if features.is_cuda:
            out = operator._conv_forward(training, tensor, weight, None)
        else:
            with _single_thread():
                out = operator._conv_forward(False, tensor, weight, None)
        key = indice_key(kernel_size)
        grid.backend_state["indice_dict"].setdefault(key, out.indice_dict[key])
        return out.features

    def conv(self, features: torch.Tensor, weight: torch.Tensor, grid, kernel_size: int) -> torch.Tensor:
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
