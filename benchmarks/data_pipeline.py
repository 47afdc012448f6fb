#!/usr/bin/env python3
"""Training data throughput: synthetic world -> rosbag2 conversion -> augmented samples -> student step.

Prints JSON:
- `synthetic_frames_per_s`: `training/synthetic` rendering + writing a SemanticKITTI folder (1 process);
- `convert_frames_per_s`: that folder -> rosbag2 mcap (`elite-ros-train convert`, 1 process);
- `dataset_samples_per_s`: training samples (ref §2 pipeline, train mode, collate with SAM padding)
  through a `DataLoader` with `--workers` workers, from the bag and from the folder, after a warm-up batch;
- `student_train_step`: seconds per sample of one student forward + CE loss + backward + SGD step on a
  batch built by that loader (native sparse backend on CPU, spconv on a GPU), for comparison: data
  loading is not the bottleneck when `data_s_per_sample * workers_needed <= train_s_per_sample`.

Timings are wall clock. On a shared CPU they are pessimistic (see `cpu_load_1min`); the teacher
(SAM ViT-B) step, not measured here, adds several times the student's cost per sample.

    .venv/bin/python benchmarks/data_pipeline.py --frames 4 --workers 2

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from elite_ros_training.data.bag_dataset import BagFrames
from elite_ros_training.data.collate import Batch, collate
from elite_ros_training.data.convert import convert
from elite_ros_training.data.dataset import PointImageDataset
from elite_ros_training.data.semantickitti import SequenceFolder


def synthetic_folder(out: Path, frames: int, seed: int) -> float:
    """Render `frames` synthetic frames into `out`; returns frames/s."""
    from elite_ros_training.synthetic.sequence import generate_sequence

    start = time.perf_counter()
    generate_sequence(out, frames, seed, progress=False)
    return frames / (time.perf_counter() - start)


def loader_rate(dataset: PointImageDataset, batch_size: int, workers: int, epochs: int) -> tuple[float, Batch]:
    """Samples/s of a DataLoader over `epochs` passes, the first batch (worker start-up) excluded."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    first = None
    samples, start = 0, None
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for batch in loader:
            if first is None:
                first, start = batch, time.perf_counter()
                continue
            samples += batch.batch_size
    elapsed = time.perf_counter() - start
    return samples / elapsed, first


def student_step_seconds(batch: Batch, steps: int) -> dict:
    """Seconds per sample of forward + CE + backward + SGD on the student (median over `steps`)."""
    from elite_ros.student import Student, StudentInput

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = Student().to(device).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.24, momentum=0.9, nesterov=True, weight_decay=1e-4)  # ref §1
    batch = batch.to(device)
    times = []
    for _ in range(steps + 1):  # one warm-up step
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        inputs = StudentInput.from_points(batch.points, batch.batch_index, batch.batch_size)
        output = model(inputs)
        loss = torch.nn.functional.cross_entropy(output.logits.float(), batch.labels, ignore_index=0)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = sorted(times[1:])[len(times[1:]) // 2]
    return {"device": str(device), "backend": model.backend_for(device), "batch_size": batch.batch_size,
            "points": int(batch.points.shape[0]), "s_per_step": round(step, 3),
            "s_per_sample": round(step / batch.batch_size, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=4, help="synthetic frames to render (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--batch-size", type=int, default=2, help="DataLoader batch size (default 2)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the frames (default 2)")
    parser.add_argument("--student-steps", type=int, default=2, help="timed student steps; 0 skips (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the main process")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    result: dict = {"host": platform.node(), "cpu_count": os.cpu_count(), "cpu_load_1min": round(os.getloadavg()[0], 2),
                    "torch_threads": torch.get_num_threads(), "frames": args.frames, "workers": args.workers,
                    "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory(prefix="elite_data_bench_") as tmp:
        folder, bag = Path(tmp) / "00", Path(tmp) / "00_bag"
        result["synthetic_frames_per_s"] = round(synthetic_folder(folder, args.frames, args.seed), 3)
        start = time.perf_counter()
        convert(folder, bag, progress=False)
        result["convert_frames_per_s"] = round(args.frames / (time.perf_counter() - start), 2)

        rates, first = {}, None
        for name, frames in (("bag", BagFrames(bag)), ("folder", SequenceFolder(folder))):
            rate, first = loader_rate(PointImageDataset(frames, train=True, seed=args.seed), args.batch_size,
                                      args.workers, args.epochs)
            rates[name] = round(rate, 2)
        result["dataset_samples_per_s"] = rates
        # one process's cost per sample, for the comparison below
        single, _ = loader_rate(PointImageDataset(BagFrames(bag), train=True, seed=args.seed), args.batch_size, 0, 1)
        result["dataset_s_per_sample_one_process"] = round(1 / single, 3)
        if args.student_steps > 0:
            student = student_step_seconds(first, args.student_steps)
            result["student_train_step"] = student
            result["workers_needed_to_feed_the_student"] = round(
                result["dataset_s_per_sample_one_process"] / student["s_per_sample"], 2)
    result["note"] = ("wall clock on a shared CPU: pessimistic; data loading keeps up when workers >= "
                      "workers_needed_to_feed_the_student (the teacher step, not timed here, makes training "
                      "slower still)")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
