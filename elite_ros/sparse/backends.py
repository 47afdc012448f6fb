"""The sparse-convolution backend seam (`SparseBackend`), which backends exist here, and what "auto" means."""
from __future__ import annotations

import functools
import importlib.util
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .grid import SparseGrid

BACKEND_NAMES = ("native", "spconv", "torchsparse")
AUTO = "auto"


class BackendError(RuntimeError):
    """A sparse backend that cannot run here: not importable, not for this task or device, or its kernels fail."""


class UnknownBackendError(BackendError, ValueError):
    """A backend name that is none of "auto" and BACKEND_NAMES."""


class SparseBackend(Protocol):
    """One submanifold sparse-convolution implementation behind `SparseGrid` and `SubMConv3d`.

    Weights are always in the canonical layout (out, kz, ky, kx, in); features are (M, C) rows, one per
    active site of the grid, in the grid's site order.
    """

    name: str
    #: whether `fused_conv` is implemented (inference with BatchNorm folded into the conv weights)
    fuses_inference: bool

    def build_map(self, grid: SparseGrid, kernel_size: int) -> Any:
        """The backend's neighbour map of `grid` for an odd kernel size (the grid caches it)."""
        ...

    def conv(self, features: Tensor, weight: Tensor, grid: SparseGrid, kernel_size: int) -> Tensor:
        """Submanifold convolution without bias: (M, in) -> (M, out); differentiable where it trains."""
        ...

    def fused_conv(self, features: Tensor, weight: Tensor, grid: SparseGrid, kernel_size: int, *, bias: Tensor,
                   extra: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Inference only: conv + bias (out,) [+ extra[0] (M, C2) @ extra[1] (C2, out), a 1x1x1 term at the
        centre offset] in one pass -> (M, out). Only when `fuses_inference`; else NotImplementedError."""
        ...


@functools.cache
def _importable(module: str) -> bool:
    if importlib.util.find_spec(module) is None:
        return False
    try:
        importlib.import_module(module if module != "spconv" else "spconv.pytorch")
    except Exception:  # a broken build (missing CUDA libs, ABI mismatch) counts as unavailable
        return False
    return True


def available_backends() -> list[str]:
    """Backends that import here: "native" always, "spconv" and "torchsparse" when importable."""
    return [name for name in BACKEND_NAMES if name == "native" or _importable(name)]


def _check_name(name: str) -> None:
    if name != AUTO and name not in BACKEND_NAMES:
        raise UnknownBackendError(f"unknown sparse backend {name!r}: choose one of {(AUTO, *BACKEND_NAMES)}")


def resolve_backend(name: str, training: bool, device: torch.device | str) -> str:
    """Concrete backend for ``name`` ("auto" or a backend name), the task and the device.

    "auto": spconv on CUDA (inference and training) when available, native everywhere else. On the
    CPU native wins: spconv 2.3.8 has no CPU backward pass, and its CPU convolution gives wrong
    results with more than one torch thread, so it runs single-threaded here and is slower
    (benchmarks/student.py: 124,668-point scan, 2 threads, native 0.76 s vs spconv 1.31 s p50 end to end).
    An explicit name is checked for availability and for training with spconv on the CPU.
    """
    _check_name(name)
    device_type = torch.device(device).type
    available = available_backends()
    if name == AUTO:
        return "spconv" if "spconv" in available and device_type == "cuda" else "native"
    if name not in available:
        raise BackendError(f"sparse backend {name!r} is not available here (import failed); available: {available}")
    if name == "spconv" and training and device_type != "cuda":
        raise BackendError("sparse backend 'spconv' cannot train on the CPU: spconv 2.x has no CPU backward pass;"
                           " use backend='native' (or 'auto') for CPU training")
    return name


@functools.cache
def get_backend(name: str) -> SparseBackend:
    """The backend object for a concrete name (not "auto")."""
    if name == AUTO:
        raise ValueError("backend 'auto' must be resolved first: "
                         "SparseGrid(..., backend=resolve_backend('auto', training, device))")
    _check_name(name)
    if name == "native":
        from .native import NativeBackend
        return NativeBackend()
    if name not in available_backends():
        raise BackendError(f"sparse backend {name!r} is not available here (import failed); "
                           f"available: {available_backends()}")
    if name == "spconv":
        from .spconv_backend import SpconvBackend
        return SpconvBackend()
    from .torchsparse_backend import TorchsparseBackend
    return TorchsparseBackend()
