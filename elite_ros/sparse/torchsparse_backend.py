"""torchsparse backend (2.0 / 2.1, when the user has built it): its kernel maps and convolution kernels.

torchsparse keeps a weight of shape (K^3, in, out) whose kernel-offset order is an internal detail
that changed between releases, and its coordinate layout changed too (2.0: [x, y, z, batch], 2.1:
[batch, x, y, z]). Rather than assume either, the offset order is *measured* once per kernel size and
device by running torchsparse's own ``conv3d`` on a probe grid (a full K^3 block around one site, each
site carrying its index as feature, one output channel per kernel slot), and the canonical
(out, kz, ky, kx, in) weight is permuted accordingly. The grid's (z, y, x) columns are handed to
torchsparse as its three spatial axes; a submanifold conv does not care which axis is called what.

Kernel maps live in the ``_caches`` of one torchsparse ``SparseTensor`` per grid, keyed by
torchsparse itself, so every conv of one kernel size on a grid reuses them.
"""
from __future__ import annotations

import functools
import inspect

import torch

from .kernel_map import kernel_offsets


def _torchsparse():
    import torchsparse
    import torchsparse.nn.functional as functional

    return torchsparse, functional


@functools.cache
def _batch_last() -> bool:
    """torchsparse < 2.1 puts the batch index in the last coordinate column."""
    torchsparse, _ = _torchsparse()
    major, minor = (int(part) for part in str(torchsparse.__version__).split(".")[:2])
    return (major, minor) < (2, 1)


@functools.cache
def _conv3d_keywords() -> frozenset[str]:
    _, functional = _torchsparse()
    return frozenset(inspect.signature(functional.conv3d).parameters)


def _sparse_tensor(features: torch.Tensor, coords: torch.Tensor, spatial_range=None):
    torchsparse, _ = _torchsparse()
    if _batch_last():
        return torchsparse.SparseTensor(features, coords[:, [1, 2, 3, 0]].contiguous())
    if spatial_range is not None and "spatial_range" in inspect.signature(torchsparse.SparseTensor).parameters:
        return torchsparse.SparseTensor(features, coords, spatial_range=spatial_range)
    return torchsparse.SparseTensor(features, coords)


def _conv3d(tensor, weight: torch.Tensor, kernel_size: int, training: bool):
    _, functional = _torchsparse()
    keywords = {"kernel_size": kernel_size, "bias": None, "stride": 1}
    if "padding" in _conv3d_keywords():
        keywords["padding"] = kernel_size // 2
    if "training" in _conv3d_keywords():
        keywords["training"] = training
    return functional.conv3d(tensor, weight, **keywords)


@functools.cache
def offset_permutation(kernel_size: int, device: str) -> torch.Tensor:
    """perm[j] = canonical offset index read by torchsparse's kernel slot j, measured on a probe grid."""
    volume = kernel_size ** 3
    radius = kernel_size // 2
    displacements = kernel_offsets(kernel_size)
    coords = torch.tensor([[0, dz + radius, dy + radius, dx + radius] for dz, dy, dx in displacements],
                          dtype=torch.int32, device=device)
    features = torch.arange(1, volume + 1, dtype=torch.float32, device=device).unsqueeze(1)
    probe_weight = torch.zeros(volume, 1, volume, device=device)
    probe_weight[torch.arange(volume), 0, torch.arange(volume)] = 1.0
    tensor = _sparse_tensor(features, coords, (1, kernel_size, kernel_size, kernel_size))
    with torch.no_grad():
        out = _conv3d(tensor, probe_weight, kernel_size, training=False)
    centre_row = volume // 2  # the site with displacement (0, 0, 0)
    read = out.feats[centre_row].round().long().cpu() - 1
    if sorted(read.tolist()) != list(range(volume)):
        raise RuntimeError(f"could not calibrate torchsparse {_torchsparse()[0].__version__} kernel offsets for"
                           f" kernel_size={kernel_size}: probe read sites {read.tolist()}")
    return read.to(device)


class TorchsparseBackend:
    """torchsparse kernels; weights permuted from the canonical layout at call time."""

    name = "torchsparse"
    fuses_inference = False

    def _tensor(self, grid, features: torch.Tensor):
        """A torchsparse tensor over the grid's sites sharing the grid's kernel-map caches."""
        state = grid.backend_state
        tensor = _sparse_tensor(features, grid.coords, (grid.batch_size, *grid.spatial_shape))
        # 2.1 keeps its maps in ``_caches``; 2.0 in ``kmaps`` / ``cmaps`` dicts on the tensor.
        shared = ("_caches",) if hasattr(tensor, "_caches") else ("kmaps", "cmaps")
        for name in shared:
            if name in state:
                setattr(tensor, name, state[name])
            else:
                state[name] = getattr(tensor, name)
        return tensor

    def build_map(self, grid, kernel_size: int):
        """Let torchsparse build and cache its kernel map by running one conv on zero features."""
        zeros = torch.zeros((grid.num_sites, 1), device=grid.device)
        weight = torch.zeros((kernel_size ** 3, 1, 1), device=grid.device)
        _conv3d(self._tensor(grid, zeros), weight, kernel_size, training=torch.is_grad_enabled())
        return ("torchsparse", kernel_size)

    def conv(self, features: torch.Tensor, weight: torch.Tensor, grid, kernel_size: int) -> torch.Tensor:
        if grid.num_sites == 0:
            return features.new_zeros((0, weight.shape[0]))
        grid.kernel_map(kernel_size)
        out_channels, in_channels = weight.shape[0], weight.shape[-1]
        canonical = weight.reshape(out_channels, -1, in_channels).permute(1, 2, 0)  # (K^3, in, out)
        permutation = offset_permutation(kernel_size, str(grid.device))
        ts_weight = canonical.index_select(0, permutation).to(features.dtype).contiguous()
        training = torch.is_grad_enabled() and (features.requires_grad or weight.requires_grad)
        out = _conv3d(self._tensor(grid, features.contiguous()), ts_weight, kernel_size, training=training)
        return out.feats

    def fused_conv(self, features: torch.Tensor, weight: torch.Tensor, grid, kernel_size: int, *,
                   bias: torch.Tensor, extra: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        raise NotImplementedError("sparse backend 'torchsparse' has no fused inference convolution (fuses_inference)")
