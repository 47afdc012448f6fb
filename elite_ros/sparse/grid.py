"""SparseGrid: the active sites of one scale and the kernel maps every convolution at that scale shares."""
from __future__ import annotations

from typing import Any

import torch

from .backends import SparseBackend, get_backend
from .keys import coords_key


class SparseGrid:
    """Active voxels of a batch at one resolution, with their kernel maps built once per kernel size.

    coords: (M, 4) integer [batch, z, y, x] voxel indices, unique, on the device the features will be
    on; spatial_shape: (Z, Y, X) grid size in voxels; batch_size: number of scans. ``backend`` names the
    sparse-convolution implementation ("native", "spconv", "torchsparse"; resolve "auto" first with
    :func:`resolve_backend`). Every :class:`SubMConv3d` applied to this grid reuses its kernel map of the
    conv's kernel size; ``kernel_map_builds`` counts how many maps were built.
    """

    def __init__(self, coords: torch.Tensor, spatial_shape: tuple[int, int, int] | list[int], batch_size: int,
                 backend: str = "native", *, validate: bool = True) -> None:
        if not isinstance(coords, torch.Tensor):
            raise TypeError(f"coords must be a torch.Tensor, got {type(coords).__name__}")
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must have shape (M, 4) [batch, z, y, x], got {tuple(coords.shape)}")
        if coords.dtype.is_floating_point or coords.dtype == torch.bool or coords.is_complex():
            raise TypeError(f"coords must be an integer tensor, got {coords.dtype}")
        shape = tuple(int(s) for s in spatial_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"spatial_shape must be three positive sizes (Z, Y, X), got {tuple(spatial_shape)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.coords = coords.to(torch.int32).contiguous()
        self.spatial_shape: tuple[int, int, int] = shape
        self.batch_size = int(batch_size)
        self.backend_name = backend
        self.backend: SparseBackend = get_backend(backend)
        self.kernel_map_builds = 0
        self._maps: dict[int, Any] = {}
        self._keys: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None
        #: Free slot for a backend's own per-grid state (spconv's tensor and indice dict, ...).
        self.backend_state: dict[str, Any] = {}
        if validate:
            self._validate()

    @property
    def num_sites(self) -> int:
        """M, the number of active voxels."""
        return int(self.coords.shape[0])

    @property
    def device(self) -> torch.device:
        return self.coords.device

    def _validate(self) -> None:
        if self.num_sites == 0:
            return
        low = self.coords.amin(0)
        high = self.coords.amax(0)
        limits = (self.batch_size, *self.spatial_shape)
        names = ("batch", "z", "y", "x")
        for axis in range(4):
            if int(low[axis]) < 0 or int(high[axis]) >= limits[axis]:
                raise ValueError(f"coords column {axis} ({names[axis]}) spans [{int(low[axis])}, {int(high[axis])}],"
                                 f" outside [0, {limits[axis] - 1}] of batch_size={self.batch_size},"
                                 f" spatial_shape={self.spatial_shape}")
        values = self.sorted_keys()[1][0]
        if bool((values[1:] == values[:-1]).any()):
            raise ValueError("coords contain duplicate sites: a submanifold grid needs unique [batch, z, y, x] rows")

    def sorted_keys(self) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Linear int64 key per site and (sorted keys, argsort), computed once."""
        if self._keys is None:
            keys = coords_key(self.coords, self.spatial_shape)
            self._keys = (keys, torch.sort(keys))
        return self._keys

    def has_sorted_keys(self) -> bool:
        """Whether :meth:`sorted_keys` has been computed (validation does it)."""
        return self._keys is not None

    def kernel_map(self, kernel_size: int) -> Any:
        """The backend's kernel map for an odd ``kernel_size``, built on first use and cached."""
        kernel_map = self._maps.get(kernel_size)
        if kernel_map is None:
            kernel_map = self.backend.build_map(self, kernel_size)
            self._maps[kernel_size] = kernel_map
            self.kernel_map_builds += 1
        return kernel_map

    def has_kernel_map(self, kernel_size: int) -> bool:
        return kernel_size in self._maps

    def __repr__(self) -> str:
        return (f"SparseGrid(sites={self.num_sites}, spatial_shape={self.spatial_shape}, batch_size={self.batch_size},"
                f" backend={self.backend_name!r}, kernel_maps={sorted(self._maps)})")
