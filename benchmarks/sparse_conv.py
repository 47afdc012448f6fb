#!/usr/bin/env python3
"""Sparse-convolution backends on a real KITTI scan: kernel-map build, one conv, forward+backward.

Prints JSON. Voxelisation as the runtime does it: 0.1 m cells over x, y in [-50, 50], z in [-4, 2]
(grid (Z, Y, X) = (60, 1000, 1000)), one site per occupied cell. Timings are wall-clock milliseconds,
median and minimum over ``--repeats`` runs after one warm-up run. On a shared CPU they are pessimistic.

    .venv/bin/python benchmarks/sparse_conv.py --threads 2

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from elite_ros.sparse import SparseGrid, SubMConv3d, available_backends

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))
DEFAULT_SCAN = DATA / "kitti_odometry/seq00/000000.bin"
VOXEL_SIZE = 0.1  # m, the student's base resolution (ref §3)
LOWER = np.array([-50.0, -50.0, -4.0])  # m, x y z lower bound of the default grid (the default voxel grid)
UPPER = np.array([50.0, 50.0, 2.0])


def voxel_sites(path: Path, voxel: float = VOXEL_SIZE) -> tuple[torch.Tensor, tuple[int, int, int], int]:
    """Occupied cells of a KITTI .bin -> ((M, 4) int32 [0, z, y, x], (Z, Y, X), points read)."""
    xyz = np.fromfile(path, dtype=np.float32).reshape(-1, 4)[:, :3].astype(np.float64)
    inside = np.all((xyz >= LOWER) & (xyz < UPPER), axis=1)
    size = np.round((UPPER - LOWER) / voxel).astype(np.int64)  # x, y, z cells
    cells = np.floor((xyz[inside] - LOWER) / voxel).astype(np.int64).clip(0, size - 1)
    key = np.unique((cells[:, 2] * size[1] + cells[:, 1]) * size[0] + cells[:, 0])
    zyx = np.stack([key // (size[1] * size[0]), key // size[0] % size[1], key % size[0]], axis=1)
    coords = np.concatenate([np.zeros((len(zyx), 1), np.int64), zyx], axis=1)
    return torch.from_numpy(coords).to(torch.int32), (int(size[2]), int(size[1]), int(size[0])), len(xyz)


def timed(function: Callable[[], object], repeats: int, device: torch.device) -> dict[str, float]:
    """Median and minimum wall time in ms of ``function`` after one warm-up call."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    function()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": round(statistics.median(samples), 2), "min_ms": round(min(samples), 2)}


def bench_backend(backend: str, coords: torch.Tensor, shape, channels: int, repeats: int,
                  device: torch.device) -> dict[str, object]:
    coords = coords.to(device)
    torch.manual_seed(0)
    conv = SubMConv3d(channels, channels, 3).to(device)
    features = torch.randn(len(coords), channels, device=device)

    def build() -> SparseGrid:  # the student builds its grids from unique voxels, without validation
        grid = SparseGrid(coords, shape, 1, backend=backend, validate=False)
        grid.kernel_map(3)
        return grid

    result: dict[str, object] = {"kernel_map_build": timed(build, repeats, device)}
    grid = build()
    with torch.inference_mode():
        result["conv_reusing_map"] = timed(lambda: conv(features, grid), repeats, device)
        fresh = lambda: conv(features, SparseGrid(coords, shape, 1, backend=backend, validate=False))  # noqa: E731
        result["conv_with_map_build"] = timed(fresh, repeats, device)
    if backend == "native" or device.type == "cuda":
        trainable = features.clone().requires_grad_(True)

        def forward_backward() -> None:
            conv.zero_grad(set_to_none=True)
            trainable.grad = None
            conv(trainable, grid).sum().backward()

        result["forward_backward_reusing_map"] = timed(forward_backward, repeats, device)
    if backend == "native":
        result["neighbour_pairs"] = grid.kernel_map(3).num_pairs()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, default=DEFAULT_SCAN, help="KITTI .bin scan (float32 x y z i)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per figure after a warm-up")
    parser.add_argument("--channels", type=int, default=64, help="input = output channels of the 3x3x3 conv")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--backends", nargs="*", default=None, help="subset of available backends")
    args = parser.parse_args(argv)
    if not args.scan.is_file():
        parser.error(f"--scan: no such file {args.scan}")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    backends = args.backends or available_backends()
    unknown = sorted(set(backends) - set(available_backends()))
    if unknown:
        parser.error(f"--backends: not available here: {unknown} (available: {available_backends()})")
    coords, shape, num_points = voxel_sites(args.scan)
    report = {
        "scan": args.scan.name, "points": num_points, "voxel_size_m": VOXEL_SIZE, "sites": len(coords),
        "spatial_shape_zyx": list(shape), "channels": args.channels, "device": str(device),
        "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "backends": {name: bench_backend(name, coords, shape, args.channels, args.repeats, device)
                     for name in backends},
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
