"""One small seam over submanifold sparse convolution: spconv, torchsparse or native PyTorch.

    grid = SparseGrid(coords, spatial_shape, batch_size, backend=resolve_backend("auto", training, device))
    conv = SubMConv3d(64, 64, kernel_size=3)
    out = conv(features, grid)          # kernel map of size 3 built once per grid, shared by all convs

Weights have one canonical layout (out, kz, ky, kx, in) on every backend.
"""
from .backends import (
           BACKEND_NAMES,
           BackendError,
           SparseBackend,
           UnknownBackendError,
           available_backends,
           resolve_backend,
)
from .conv import SubMConv3d, fold_batch_norm
from .grid import SparseGrid
from .kernel_map import KernelMap, build_kernel_map, kernel_offsets

__all__ = ["BACKEND_NAMES", "BackendError", "KernelMap", "SparseBackend", "SparseGrid", "SubMConv3d",
           "UnknownBackendError", "available_backends", "build_kernel_map", "fold_batch_norm", "kernel_offsets",
           "resolve_backend"]
