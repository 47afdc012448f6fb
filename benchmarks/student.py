#!/usr/bin/env python3
"""End-to-end latency of the node's work on a real KITTI scan, per stage, quiet and beside busy processes.

What a car sees: each timed call is `SegmentationHandler.process` on the 124,668-point KITTI odometry
seq-00 scan 000000 as a PointCloud2 message, building every output (segmentation, visualization,
filtered), with the handler built from the node's parameters -- decode, range filter, voxelise, network,
labels back to points, output clouds. It prints JSON: p50 / p95 / p99 / mean latency per stage
(`PROCESSING_STAGES`: preprocess, inference = the network, postprocess, total) over `--runs` runs after
`--warmup` runs (each run's scan lacks its own random 0.5 % of the points, as consecutive scans of a drive
differ; `--drop 0` repeats the scan itself), Hz (1000 / mean total), and peak memory.

Every configuration (device, backend, precision, `--threads`, `--omp-wait`, `--nice`) runs in its own process,
started with the environment the node would give it (OpenMP's wait policy is read when torch loads), and
the configurations are interleaved call by call, so a drift of the shared machine's load hits them
alike. Peak memory is that process's ``ru_maxrss`` (no sampling thread competes with the timed work;
`--sampler-thread` adds, per configuration, a twin that runs the 2 ms RSS sampler earlier versions of
this script ran, to show what it cost them) and torch.cuda.max_memory_allocated on the GPU. CPU runs are
fp32, plus bf16 when the CPU has native bf16 units (AVX512-BF16 / AMX; `--cpu-precisions` overrides);
GPU runs (when CUDA is available) fp32 and fp16.

`--co-load N` starts N busy processes (one spinning core each, benchmarks/co_load.py) and alternates
blocks of `--block` rounds with them paused and running: each configuration is reported `quiet` and
`co_load`, with `co_load_p99_over_quiet_p50` (the node's target: <= 2 with 2 busy co-processes).

The bundled default checkpoint is used unless `--checkpoint` is given: speed does not depend on the
weights. Also measured, as the baseline the issue compares against: the official code's voxeliser
(`torch.unique(dim=0)` over (batch, x, y, z) rows at five scales) against ours on the same scan.

    .venv/bin/python benchmarks/student.py --co-load 2 --threads 1 2 --omp-wait passive unset --runs 20
"""
from __future__ import annotations

import argparse
import contextlib
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
from co_load import BusyProcesses, Worker, peak_rss_mb

from elite_ros.checkpoint import default_checkpoint
from elite_ros.cpu_threads import OPENMP_WAIT_POLICY, set_niceness
from elite_ros.device import PRECISIONS, cpu_supports_precision
from elite_ros.params import parameter_schema
from elite_ros.segmenter import BOOKKEEPING_THREADS
from elite_ros.sparse import available_backends
from elite_ros.voxel import VoxelConfig, in_range_mask, voxelise

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))
DEFAULT_SCAN = DATA / "kitti_odometry" / "seq00" / "000000.bin"
DEFAULT_DROP = 0.005  # fraction of points each run's scan lacks (see scan_variant)
OFFICIAL_SECONDS_PER_SCAN = (2.5, 2.9)  # docs/reference.md §12: official student, 2 CPU threads, this machine


class PeakRss:
    """Samples this process's resident memory in a thread; `.peak_mb` after the `with` block.

    For benchmarks that need the peak of one block inside a longer process (benchmarks/training.py);
    this script's workers read their own ``ru_maxrss`` instead, with no thread beside the timed work.
    """

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


def scan_variant(points: np.ndarray, index: int, drop: float) -> np.ndarray:
    """Run `index`'s scan: `points` without its own seeded random `drop` fraction of the points.

    Consecutive scans of a drive never have the same voxel counts; repeating one scan would let shape-
    keyed caches (oneDNN compiles a GEMM kernel per shape for CPU bf16) hit every time, which no car sees.
    drop = 0 repeats the scan itself.
    """
    if drop <= 0:
        return points
    return points[np.random.default_rng(index).random(points.shape[0]) >= drop]


def _load_configuration(config: dict) -> tuple:
    """Worker side (its own process): the node's handler for `config`; returns (run, stats) callables.

    `run(index)` segments run `index`'s scan as a PointCloud2 message with every output, as the node does
    for a cloud with subscribers, and returns the handler's timings (ms, PROCESSING_STAGES: inference is
    the network alone, total is message in to output clouds out).
    """
    from elite_ros.handler import OUTPUTS, SegmentationHandler
    from elite_ros.params import SegmentParams
    from elite_ros.recording import kitti_cloud

    if config["nice"]:  # the node's `nice` parameter
        set_niceness(config["nice"])

    params = SegmentParams(checkpoint=config["checkpoint"], device=config["device"], precision=config["precision"],
                           backend=config["backend"], tta_votes=config["tta_votes"], threads=config["threads"])
    handler = SegmentationHandler.from_params(params)
    segmenter = handler.segmenter
    points = np.fromfile(config["scan"], dtype=np.float32).reshape(-1, 4)
    if segmenter.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(segmenter.device)

    def run(index: int) -> dict:
        kept = scan_variant(points, index, config["drop"])
        fields = {"x": kept[:, 0], "y": kept[:, 1], "z": kept[:, 2], "intensity": kept[:, 3]}
        msg = kitti_cloud(fields, stamp_ns=index * 100_000_000)
        with PeakRss() if config["sampler_thread"] else contextlib.nullcontext():
            result = handler.process(msg, OUTPUTS)
        if not result.ok:
            raise RuntimeError(result.error)
        return result.timings_ms

    def stats() -> dict:
        out = {"resolved_backend": segmenter.backend, "peak_rss_mb": peak_rss_mb(),
               "torch_threads": torch.get_num_threads(),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp spins first)")}
        if segmenter.device.type == "cuda":
            out["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(segmenter.device) / 2**20, 1)
        return out

    return run, stats


def summarise(samples: list[dict]) -> dict:
    """Per stage percentiles (ms) over timed runs, and Hz = 1000 / mean total."""
    stages = list(samples[0]) if samples else []
    latency = {stage: percentiles([s[stage] for s in samples]) for stage in stages}
    mean_total = latency["total"]["mean"] if latency else math.inf
    return {"latency_ms": latency, "hz": round(1000.0 / mean_total, 2) if mean_total > 0 else math.inf}


def measure_interleaved(workers: list[Worker], warmup: int, runs: int, block: int,
                        busy: BusyProcesses | None) -> list[dict[str, list[dict]]]:
    """Samples per worker and phase ("quiet", and "co_load" while `busy` runs), interleaved.

    `warmup` quiet rounds first (untimed); then blocks of `block` rounds alternate quiet and co-load
    until each phase has `runs` rounds. A round gives every worker one call, starting at a different
    worker each round; within a round all workers get the same scan.
    """
    phases = ["quiet", "co_load"] if busy is not None else ["quiet"]
    samples: list[dict[str, list[dict]]] = [{phase: [] for phase in phases} for _ in workers]
    index = 0

    def one_round(phase: str | None) -> None:
        nonlocal index
        order = list(range(len(workers)))
        order = order[index % len(order):] + order[:index % len(order)]
        for w in order:
            timings = workers[w].run(index)
            if phase is not None:
                samples[w][phase].append(timings)
        index += 1

    if busy is not None:
        busy.pause()
    for _ in range(warmup):
        one_round(None)
    while any(len(samples[0][phase]) < runs for phase in phases):
        for phase in phases:
            if busy is not None:
                busy.resume() if phase == "co_load" else busy.pause()
            for _ in range(min(block, runs - len(samples[0][phase]))):
                one_round(phase)
    if busy is not None:
        busy.pause()
    return samples


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
    parser.add_argument("--checkpoint", type=Path, default=None, help="student checkpoint (default: the bundled one)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per configuration and phase (>= 20 for p99)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    node_threads = parameter_schema()["threads"]["default"]
    parser.add_argument("--threads", type=int, nargs="+", default=[node_threads],
                        help=f"torch CPU thread counts to measure (0 = one per core; default {node_threads}, the "
                             "node's default); GPU runs use the first")
    parser.add_argument("--omp-wait", nargs="+", default=[OPENMP_WAIT_POLICY.lower()],
                        choices=["passive", "active", "unset"],
                        help="OMP_WAIT_POLICY of each worker process (default: the node's, "
                             f"{OPENMP_WAIT_POLICY.lower()}; unset = libgomp's default, spin first)")
    parser.add_argument("--nice", type=int, nargs="+", default=[0],
                        help="the node's `nice` parameter: niceness of each configuration's worker process (default "
                             "0; below 0, a priority above the co-load's, needs root or CAP_SYS_NICE)")
    parser.add_argument("--co-load", type=int, default=0, metavar="N",
                        help="N busy processes (one spinning core each) run beside the work in alternate blocks of "
                             "--block rounds; each configuration is then reported quiet and under co-load")
    parser.add_argument("--block", type=int, default=5, help="rounds per quiet / co-load block (default 5)")
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
    parser.add_argument("--fusion", action="store_true", help="also the U2MKD fusion student, with and without an "
                        "image: latency per stage, the image branch's share, its parameters and FLOPs "
                        "(benchmarks/fusion_student.py, after the other configurations)")
    parser.add_argument("--sampler-thread", action="store_true",
                        help="also run every CPU configuration with the 2 ms RSS-sampling thread that earlier versions "
                             "of this script ran beside the timed work (PeakRss), to see what it cost them")
    args = parser.parse_args()
    if not args.scan.is_file():
        parser.error(f"--scan: no such file {args.scan}")

    points = np.fromfile(args.scan, dtype=np.float32).reshape(-1, 4)
    checkpoint = args.checkpoint or default_checkpoint()
    backends = args.backends or available_backends()
    report: dict = {
        "scan": str(args.scan), "points": int(points.shape[0]),
        "points_in_range": int(np.asarray(in_range_mask(points[:, :3])).sum()),
        "measured": "SegmentationHandler.process on the scan as a PointCloud2 with every output (what the node "
                    "does per cloud), each configuration in its own process, configurations interleaved",
        "runs": args.runs, "warmup": args.warmup, "tta_votes": args.tta_votes, "drop_per_run": args.drop,
        "co_load_processes": args.co_load, "block": args.block,
        "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "note": "wall-clock on a shared CPU: compare configurations of one run, not runs; Hz = 1000 / mean total",
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
        samplers = [False, True] if args.sampler_thread else [False]
        configurations += [("cpu", backend, precision, threads, wait, sampler, nice) for precision in precisions
                           for threads in args.threads for wait in args.omp_wait for backend in backends
                           for sampler in samplers for nice in args.nice]
    if not args.no_gpu and torch.cuda.is_available():
        configurations += [("cuda", backend, precision, args.threads[0], args.omp_wait[0], False, args.nice[0])
                           for backend in backends for precision in ("fp32", "fp16")]
    workers = []
    for device, backend, precision, threads, wait, sampler, nice in configurations:
        config = {"device": device, "backend": backend, "precision": precision, "threads": threads,
                  "omp_wait": wait, "sampler_thread": sampler, "nice": nice, "checkpoint": str(checkpoint),
                  "scan": str(args.scan), "drop": args.drop, "tta_votes": args.tta_votes}
        workers.append(Worker(_load_configuration, config,
                              env={"OMP_WAIT_POLICY": None if wait == "unset" else wait.upper()}))
    ready = [w for w in workers if w.wait_ready()]
    for worker in workers:
        if worker.error is not None:  # a backend or precision that cannot run here
            report["results"].append({**_entry(worker.config), "error": worker.error})
    busy = BusyProcesses(args.co_load).start() if args.co_load > 0 else None
    try:
        samples = measure_interleaved(ready, args.warmup, args.runs, args.block, busy)
    finally:
        if busy is not None:
            busy.stop()
    for worker, phases in zip(ready, samples):
        entry = {**_entry(worker.config), **worker.stats()}
        for phase, values in phases.items():
            entry[phase] = summarise(values)
        quiet_p50 = entry["quiet"]["latency_ms"]["total"]["p50"]
        seconds = entry["quiet"]["latency_ms"]["total"]["mean"] / 1000.0
        entry["speedup_vs_official"] = [round(s / seconds, 2) for s in OFFICIAL_SECONDS_PER_SCAN]
        if "co_load" in entry:
            entry["co_load_p99_over_quiet_p50"] = round(entry["co_load"]["latency_ms"]["total"]["p99"] / quiet_p50, 2)
        report["results"].append(entry)
        worker.close()
    if args.fusion:
        from fusion_student import fusion_report

        report["fusion_student"] = fusion_report(runs=args.runs, warmup=args.warmup, threads=args.threads[0],
                                                 devices=(["cpu"] * (not args.no_cpu)
                                                          + ["cuda"] * (not args.no_gpu and torch.cuda.is_available())))
    report["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


def _entry(config: dict) -> dict:
    return {key: config[key] for key in ("device", "backend", "precision", "threads", "omp_wait", "sampler_thread",
                                         "nice")}


if __name__ == "__main__":
    main()
