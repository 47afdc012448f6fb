#!/usr/bin/env python3
"""Training throughput: optimiser steps/s, s/sample and peak memory per configuration, and data loading.

One training step is exactly the Lightning module's (`ELiTeModule.losses` -> backward -> NaN guard /
AdaLoRA allocation -> gradient clipping -> SGD step) on real-size frames: the KITTI object frame 000000 of
the test fixtures (115,384-point scan, 1224 x 370 image, its own calibration), augmented anew for every
sample as in training. Configurations:

- ``student``: ablation row a, the student alone (CE + Lovasz);
- ``ppmskd_vit_b``: row l's full PPMSKD with SAM ViT-B (random weights: speed does not depend on them),
  AdaLoRA, token cut, upscaling decoders and dense pseudo labels;
- ``ppmskd_tiny``: the same with the CPU configs' tiny ViT (``cpu_synthetic_row_l``), fully tuned.

Each (configuration, batch size) runs in its own process (peak memory is per process: RSS sampled every
2 ms on the CPU, torch.cuda.max_memory_allocated on a GPU), configurations interleaved round by round
(``--rounds``) so that a shared CPU's drifting load hits all alike; the figures are the medians over
rounds. Data loading: seconds per sample to read + augment + project + crop one frame (one worker) and
per batch to collate, beside the step time it must hide behind.

    .venv/bin/python benchmarks/training.py --batches 1 2 --steps 4 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))
KITTI_OBJECT = DATA / "kitti_object" / "training"
CONFIGS = {"student": "row_a", "ppmskd_vit_b": "row_l", "ppmskd_tiny": "cpu_synthetic_row_l"}


class _RepeatedFrame:
    """A FrameSource: the one KITTI object frame, `count` times, with dense pseudo labels from its LiDAR labels."""

    def __init__(self, count: int) -> None:
        from elite_ros_training.data.semantickitti import SequenceFolder

        frame = SequenceFolder(KITTI_OBJECT)[0]
        height, width = frame.image.shape[:2]
        rng = np.random.default_rng(0)
        pseudo = rng.integers(1, 20, (2, height, width)).astype(np.uint16)  # any dense map: speed only
        labels = rng.choice(np.array([10, 40, 48, 50, 70, 72], np.uint32), len(frame.points))
        from dataclasses import replace

        self.frame = replace(frame, labels=labels, pseudo_labels=pseudo)
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return self.frame


def _config(name: str, batch: int):
    from elite_ros_training.config import load_config, named_config

    return load_config(named_config(CONFIGS[name]), [f"data.batch_size={batch}", "data.num_workers=0",
                                                      "data.pipeline.use_pseudo_labels=true",
                                                      "data.class_counts=[" + ",".join(["1"] * 20) + "]"])


def measure(name: str, batch: int, steps: int, warmup: int, device: str) -> dict:
    """Run `warmup` + `steps` training steps of one configuration in this process."""
    from student import PeakRss  # benchmarks/student.py: the RSS sampler

    from elite_ros_training.data.collate import collate
    from elite_ros_training.datamodule import ELiTeDataModule
    from elite_ros_training.module import ELiTeModule
    from elite_ros_training.ppmskd import class_weights_from_counts

    config = _config(name, batch)
    data = ELiTeDataModule(config, train_frames=_RepeatedFrame(batch * (steps + warmup)), progress=False)
    weights = class_weights_from_counts(np.asarray(config.data.class_counts)).tolist()
    module = ELiTeModule.from_config(config, weights, total_steps=1000).to(device)
    optimizer = module.configure_optimizers()["optimizer"]
    load_s, collate_s, step_s, samples = [], [], [], 0
    cuda = device.startswith("cuda")
    peak = PeakRss()
    with peak:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for step in range(warmup + steps):
            start = time.perf_counter()
            items = [data.train_set[step * batch + i] for i in range(batch)]
            loaded = time.perf_counter()
            batch_data = collate(items, teacher_input_size=data.teacher_input).to(device)
            collated = time.perf_counter()
            terms = module.losses(batch_data)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            module.on_before_optimizer_step(optimizer)
            if config.optim.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(module.parameters(), config.optim.grad_clip_norm)
            optimizer.step()
            if cuda:
                torch.cuda.synchronize()
            done = time.perf_counter()
            if step >= warmup:
                load_s.append((loaded - start) / batch)
                collate_s.append(collated - loaded)
                step_s.append(done - collated)
                samples += batch
    step_median = float(np.median(step_s))
    result = {
        "config": name, "batch": batch, "device": device, "steps": steps,
        "steps_per_s": 1.0 / step_median, "s_per_sample": step_median / batch,
        "step_s": {"median": step_median, "min": float(np.min(step_s)), "max": float(np.max(step_s))},
        "points_per_sample": int(np.mean([len(i.points) for i in items])),
        "data_s_per_sample": float(np.median(load_s)), "collate_s_per_batch": float(np.median(collate_s)),
        "peak_rss_mb": peak.peak_mb,
        "trainable_parameters": sum(p.numel() for p in module.parameters() if p.requires_grad),
    }
    if cuda:
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions (medians reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--one", nargs=2, metavar=("CONFIG", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.steps, args.warmup, args.device)))
        return
    runs: dict[tuple[str, int], list[dict]] = {}
    loads = []
    for _ in range(args.rounds):
        for name in args.configs:
            for batch in args.batches:
                loads.append(os.getloadavg()[0])
                command = [sys.executable, __file__, "--one", name, str(batch), "--steps", str(args.steps),
                           "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                runs.setdefault((name, batch), []).append(json.loads(out.strip().splitlines()[-1]))
    results = []
    for (_name, batch), items in runs.items():
        merged = dict(items[0])
        for key in ("steps_per_s", "s_per_sample", "data_s_per_sample", "collate_s_per_batch", "peak_rss_mb"):
            merged[key] = float(np.median([item[key] for item in items]))
        merged["rounds"] = len(items)
        merged["data_vs_step"] = merged["data_s_per_sample"] * batch / (1.0 / merged["steps_per_s"])
        results.append(merged)
    print(json.dumps({
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": psutil.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__,
                    "load_avg_1min_during": [round(v, 2) for v in loads],
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "note": "data_vs_step: seconds one loader worker needs for a batch / seconds of a step (< 1: one worker "
                "keeps up); shared CPU: figures move with the load",
        "results": results}, indent=2))


if __name__ == "__main__":
    main()
