#!/usr/bin/env python3
"""End-to-end student latency on a real KITTI scan, per stage, for every backend and device.

Runs `Segmenter.predict` (preprocess -> voxelise -> network -> postprocess) on the 124,668-point KITTI
odometry seq-00 scan 000000 and prints JSON: p50 / p95 / p99 / mean latency per stage and end to end
over `--runs` runs after `--warmup` runs (each run's scan lacks its own random 0.5 % of the points, as
consecutive scans of a drive differ; `--drop 0` repeats the scan itself), Hz (1000 / mean total), and
peak memory (process RSS sampled every 2 ms by a background thread on the CPU;
torch.cuda.max_memory_allocated on the GPU). CPU runs use `--threads` torch threads (default 2) in fp32,
and also in bf16 when the CPU has native bf16 units (AVX512-BF16 / AMX; `--cpu-precisions` overrides);
GPU runs (when CUDA is available) use fp32 and fp16.

The untrained default checkpoint is used unless `--checkpoint` is given: speed does not depend on the
weights. Also measured, as the baseline the issue compares against: the official code's voxeliser
(`torch.unique(dim=0)` over (batch, x, y, z) rows at five scales) against ours on the same scan.
On a shared CPU the figures are pessimistic.

    .venv/bin/python benchmarks/student.py --threads 2 --runs 20
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from elite_ros.checkpoint import default_checkpoint
from elite_ros.cloud import scan_from_arrays
from elite_ros.device import PRECISIONS, cpu_supports_precision
from elite_ros.segmenter import BOOKKEEPING_THREADS, PREDICTION_STAGES, Segmenter
from elite_ros.sparse import available_backends
from elite_ros.voxel import VoxelConfig, in_range_mask, voxelise

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))
DEFAULT_SCAN = DATA / "kitti_odometry" / "seq00" / "000000.bin"
DEFAULT_DROP = 0.005  # fraction of points each run's scan lacks (see scan_variants)
OFFICIAL_SECONDS_PER_SCAN = (2.5, 2.9)  # docs/reference.md §12: official student, 2 CPU threads, this machine


class PeakRss:
    """Samples this process's resident memory in a thread; `.peak_mb` after the `with` block."""

    def __init__(self, period_s: float = 0.002) -> None:
        self.period_s = period_s
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.period_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def percentiles(samples: list[float]) -> dict[str, float]:
    values = np.asarray(samples)
    return {"p50": round(float(np.percentile(values, 50)), 2), "p95": round(float(np.percentile(values, 95)), 2),
            "p99": round(float(np.percentile(values, 99)), 2), "mean": round(float(values.mean()), 2),
            "min": round(float(values.min()), 2)}


def scan_variants(points: np.ndarray, count: int, drop: float, seed: int = 0) -> list:
    """`count` scans of `points`, each without its own seeded random `drop` fraction of points.

    Consecutive scans of a drive never have the same voxel counts; repeating one scan would let shape-
    keyed caches (oneDNN compiles a GEMM kernel per shape for CPU bf16) hit every time, which no car sees.
    drop = 0 repeats the scan itself.
    """
    rng = np.random.default_rng(seed)
    scans = []
    for _ in range(count):
        kept = points if drop <= 0 else points[rng.random(points.shape[0]) >= drop]
        scans.append(scan_from_arrays(kept[:, :3], kept[:, 3]))
    return scans


def measure(segmenter: Segmenter, scans: list, warmup: int) -> dict:
    """Latency statistics of one prediction per scan of `scans` after `warmup` ones, plus peak memory."""
    for scan in scans[:warmup]:
        segmenter.predict(scan)
    if segmenter.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(segmenter.device)
    samples: dict[str, list[float]] = {stage: [] for stage in PREDICTION_STAGES}
    with PeakRss() as rss:
        for scan in scans[warmup:]:
            timings = segmenter.predict(scan).timings_ms
            for stage in PREDICTION_STAGES:
                samples[stage].append(timings[stage])
    result = {"latency_ms": {stage: percentiles(values) for stage, values in samples.items()}}
    mean_total = result["latency_ms"]["total"]["mean"]
    result["hz"] = round(1000.0 / mean_total, 2) if mean_total > 0 else math.inf
    result["peak_rss_mb"] = rss.peak_mb
    if segmenter.device.type == "cuda":
        result["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(segmenter.device) / 2**20, 1)
    return result


def official_voxeliser_ms(xyz: torch.Tensor, config: VoxelConfig, repeats: int = 5) -> dict[str, float]:
    """The official voxeliser's core (unique(dim=0) over (b, x, y, z) rows, five scales) vs ours.

    Median ms over `repeats` alternating runs (so both see the same machine load).
    """
    batch = torch.zeros(xyz.shape[0], dtype=torch.int64)

    def official() -> None:
        for scale in config.scales:
            columns = [(math.ceil(config.base_cells[a] / scale) * (xyz[:, a] - config.min_bound[a]) /
                        config.extent[a]).long() for a in range(3)]
            torch.unique(torch.stack([batch] + columns, dim=1), return_inverse=True, return_counts=True, dim=0)

    def ours() -> None:
        voxelise(xyz, batch, 1, config)

    functions = {"official_unique_rows_ms": official, "ours_linear_keys_ms": ours}
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: round(float(np.median(values)), 1) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan", type=Path, default=DEFAULT_SCAN, help="KITTI .bin scan (float32 x y z i)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="student checkpoint (default: untrained)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per configuration (>= 20 for p99)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="torch CPU thread counts to measure (e.g. 1 2); GPU runs use the first")
    parser.add_argument("--backends", nargs="*", default=None,
                        help=f"sparse backends (default: all available: {available_backends()})")
    parser.add_argument("--cpu-precisions", nargs="+", default=None, choices=sorted(PRECISIONS),
                        help="CPU precisions (default: fp32, plus bf16 where the CPU runs it natively)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU runs")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU runs")
    parser.add_argument("--tta-votes", type=int, default=1, help="test-time augmentation votes")
    parser.add_argument("--drop", type=float, default=DEFAULT_DROP,
                        help="each run's scan lacks its own random fraction of the points, as consecutive scans "
                             f"differ (default {DEFAULT_DROP}; 0 repeats the scan itself)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the official-voxeliser comparison")
    args = parser.parse_args()
    if not args.scan.is_file():
        parser.error(f"--scan: no such file {args.scan}")

    torch.set_num_threads(args.threads[0])
    points = np.fromfile(args.scan, dtype=np.float32).reshape(-1, 4)
    scans = scan_variants(points, args.warmup + args.runs, args.drop)
    checkpoint = args.checkpoint or default_checkpoint()
    backends = args.backends or available_backends()
    report: dict = {
        "scan": str(args.scan), "points": int(points.shape[0]),
        "points_in_range": int(np.asarray(in_range_mask(points[:, :3])).sum()),
        "runs": args.runs, "warmup": args.warmup, "tta_votes": args.tta_votes, "drop_per_run": args.drop,
        "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "note": "wall-clock on a shared CPU: pessimistic; Hz = 1000 / mean total latency",
        "official_seconds_per_scan_reference": list(OFFICIAL_SECONDS_PER_SCAN),
        "results": [],
    }
    if not args.no_baseline:  # on one thread, as the segmenter runs its voxeliser on the CPU
        torch.set_num_threads(BOOKKEEPING_THREADS)
        report["voxeliser_comparison_threads"] = BOOKKEEPING_THREADS
        xyz = torch.from_numpy(points[np.asarray(in_range_mask(points[:, :3]))][:, :3].copy())
        report["voxeliser_comparison"] = official_voxeliser_ms(xyz, VoxelConfig())
    configurations = []
    if not args.no_cpu:
        precisions = args.cpu_precisions or [p for p in ("fp32", "bf16") if cpu_supports_precision(p)]
        configurations += [("cpu", backend, precision, threads) for precision in precisions
                           for threads in args.threads for backend in backends]
    if not args.no_gpu and torch.cuda.is_available():
        configurations += [("cuda", backend, precision, args.threads[0]) for backend in backends
                           for precision in ("fp32", "fp16")]
    for device, backend, precision, threads in configurations:
        torch.set_num_threads(threads)
        entry = {"device": device, "backend": backend, "precision": precision, "torch_threads": threads}
        segmenter = None
        try:
            segmenter = Segmenter.from_checkpoint(checkpoint, device=device, precision=precision, backend=backend,
                                                  tta_votes=args.tta_votes)
            entry["resolved_backend"] = segmenter.backend
            entry.update(measure(segmenter, scans, args.warmup))
            seconds = entry["latency_ms"]["total"]["mean"] / 1000.0
            entry["speedup_vs_official"] = [round(s / seconds, 2) for s in OFFICIAL_SECONDS_PER_SCAN]
        except (RuntimeError, ValueError) as error:  # a backend that cannot run here
            entry["error"] = str(error)
        report["results"].append(entry)
        del segmenter
    report["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
