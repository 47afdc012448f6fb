#!/usr/bin/env python3
"""The U2MKD fusion student (elite_ros/fusion.py, docs/reference.md §14): latency per stage with and without
an image, the image branch's share, and the image branch's parameters and FLOPs. Prints JSON.

Input: KITTI object training frame 000000 (115,384 points, 1224 x 370 image, its calibration;
shared/data/kitti_object) through `Segmenter.predict(scan, image, camera)` -- what the node runs per scan
-- and `Segmenter.predict(scan)` (the imputation path). Per configuration (device, precision) the two are
interleaved call by call; each run's scan lacks its own random 0.5 % of the points (consecutive scans of
a drive differ). Stages: the segmenter's `PREDICTION_STAGES` (preprocess = range filter, projection and
image normalisation; voxelise; network; postprocess; total), plus the image branch alone, timed by hooks
around it (and around the points -> image plane -> points fusion) inside the same calls. FLOPs:
torch.utils.flop_counter (2 per multiply-add) of the image branch
on the camera's full image; parameters: counted. Speed does not depend on the weights: a seeded, untrained
fusion student unless --checkpoint names one.

    .venv/bin/python benchmarks/fusion_student.py --runs 10
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from elite_ros.camera import CameraModel
from elite_ros.checkpoint import make_metadata, save_checkpoint
from elite_ros.cloud import scan_from_arrays
from elite_ros.fusion import FusionStudent, ImageBranch, ImageFusionConfig
from elite_ros.segmenter import PREDICTION_STAGES, Segmenter
from elite_ros.student import count_parameters

REPO = Path(__file__).resolve().parents[1]
OBJECT_FRAME = REPO.parent / "shared" / "data" / "kitti_object" / "training"
DROP = 0.005  # fraction of points each run's scan lacks
KITTI_SIZES = ((1242, 375), (1224, 370))  # odometry seq 00 and the object frame, pixels (width, height)


def image_branch_figures(config: ImageFusionConfig | None = None) -> dict[str, object]:
    """Parameters and GFLOPs (2 per multiply-add) of the image branch per KITTI image size."""
    config = config or ImageFusionConfig()
    branch = ImageBranch(config).eval()
    flops = {}
    for width, height in KITTI_SIZES:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            output = branch(torch.zeros(1, 3, height, width))
        flops[f"{width}x{height}"] = {"gflops": counter.get_total_flops() / 1e9,
                                      "feature_map": list(output.shape[1:])}
    return {"parameters": count_parameters(branch), "config": {"widths": list(config.widths),
            "channels": config.channels, "downsample": config.downsample}, "flops": flops}


def object_frame():
    """(xyz (N, 3), intensity (N,), image (H, W, 3) uint8, CameraModel) of KITTI object frame 000000."""
    from elite_ros_training.data.semantickitti import SequenceFolder

    frame = SequenceFolder(OBJECT_FRAME)[0]
    camera = CameraModel(frame.projection, frame.image.shape[1], frame.image.shape[0])
    return frame.points[:, :3], frame.points[:, 3], frame.image, camera


class Stopwatch:
    """Milliseconds spent inside a module's forward (pre/post hooks, synchronised on CUDA)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.device, self.ms, self._start = device, 0.0, 0.0
        module.register_forward_pre_hook(lambda *_: self._begin())
        module.register_forward_hook(lambda *_: self._end())

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _begin(self) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _end(self) -> None:
        self._sync()
        self.ms += (time.perf_counter() - self._start) * 1e3


def summarise(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {"p50": float(np.percentile(array, 50)), "p90": float(np.percentile(array, 90)),
            "mean": float(array.mean())}


def measure(checkpoint: Path, device: str, precision: str, runs: int, warmup: int) -> dict[str, object]:
    """Interleaved with / without image calls on one configuration."""
    segmenter = Segmenter.from_checkpoint(checkpoint, device=device, precision=precision, warmup=True)
    assert isinstance(segmenter.model, FusionStudent)
    watch = Stopwatch(segmenter.model.image, segmenter.device)
    plane = Stopwatch(segmenter.model.points_to_image, segmenter.device) if segmenter.model.points_to_image else None
    xyz, intensity, image, camera = object_frame()
    rng = np.random.default_rng(0)
    timings: dict[str, dict[str, list[float]]] = {"with_image": {}, "without_image": {}}
    for run in range(warmup + runs):
        keep = rng.random(xyz.shape[0]) >= DROP
        scan = scan_from_arrays(xyz[keep], intensity[keep])
        for name in ("with_image", "without_image"):
            watch.ms = 0.0
            if plane is not None:
                plane.ms = 0.0
            prediction = (segmenter.predict(scan, image, camera) if name == "with_image"
                          else segmenter.predict(scan))
            if run < warmup:
                continue
            stages = dict(prediction.timings_ms, image_branch=watch.ms)
            if plane is not None:
                stages["points_to_image"] = plane.ms
            for stage, value in stages.items():
                timings[name].setdefault(stage, []).append(value)
    result: dict[str, object] = {name: {stage: summarise(values) for stage, values in stages.items()}
                                 for name, stages in timings.items()}
    with_image = timings["with_image"]
    result["image_branch_share_of_network"] = float(np.median(np.asarray(with_image["image_branch"])
                                                              / np.asarray(with_image["network"])))
    result["image_branch_share_of_total"] = float(np.median(np.asarray(with_image["image_branch"])
                                                            / np.asarray(with_image["total"])))
    result["backend"] = segmenter.backend
    return result


def fusion_report(*, runs: int, warmup: int, threads: int, devices: list[str] | None = None,
                  checkpoint: Path | None = None) -> dict[str, object]:
    """Everything this script prints, as a dict (benchmarks/student.py --fusion adds it to its report)."""
    torch.set_num_threads(threads)
    devices = devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    with tempfile.TemporaryDirectory() as scratch:
        parameters = {}
        if checkpoint is None:
            torch.manual_seed(0)
            model = FusionStudent()
            checkpoint = save_checkpoint(Path(scratch) / "fusion.safetensors", model, make_metadata(model))
            parameters = {"fusion_student": count_parameters(model), "lidar_branch": count_parameters(model.lidar)}
        configurations = {}
        for device in devices:
            for precision in (["fp32", "fp16"] if device.startswith("cuda") else ["fp32"]):
                configurations[f"{device}/{precision}"] = measure(checkpoint, device, precision, runs, warmup)
    return {"image_branch": image_branch_figures(), "parameters": parameters,
            "stages": list(PREDICTION_STAGES) + ["image_branch", "points_to_image"], "threads": threads,
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "runs": runs,
            "configurations": configurations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="fusion .safetensors (default: a seeded untrained one)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the node's default: 1)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    args = parser.parse_args()
    print(json.dumps(fusion_report(runs=args.runs, warmup=args.warmup, threads=args.threads, devices=args.devices,
                                   checkpoint=args.checkpoint), indent=1))


if __name__ == "__main__":
    main()
