#!/usr/bin/env python3
"""How much bf16 CPU inference changes the student's labels compared with fp32, on a fitted model.

No trained checkpoint exists and the bundled default predicts one class everywhere, so the student
(native sparse backend, fp32, CPU) is first fitted to ONE labelled SemanticKITTI scan
(`semantickitti/spvnas_000000/000000.{bin,label}`): `--steps` full-scan steps of cross-entropy (ignore
index 0) with Adam. It is saved with `trained: false` (it has seen a single scan: not a real model), then
loaded through `Segmenter.from_checkpoint(device="cpu", precision=p)` for p = fp32 and bf16, and both
label (a) the scan it was fitted on and (b) an unseen place, KITTI odometry seq 00 frame 000000.

Prints one JSON object: fit steps, final loss, fit seconds; per scan the points, the fraction of in-range
points whose bf16 class equals the fp32 class, mean / max |probability bf16 - fp32| (probability = softmax
of each precision's own argmax class), distinct classes predicted per precision (a degenerate model would
agree trivially), and on the labelled scan mIoU and accuracy against ground truth for both precisions
(metric of `elite_ros.evaluate`: classes 1..19, class-0 points excluded); per precision the median
`predict` latency over `--runs` runs after a warm-up (alternating precisions, on the odometry scan).
Latency is wall clock on a shared CPU: pessimistic. If this CPU has no native bf16 units, prints
{"error": ...} and exits 0.

    .venv/bin/python benchmarks/precision_agreement.py --steps 60 --threads 2 --runs 5

Data: KITTI (Geiger et al., CVPR 2012, CC BY-NC-SA 3.0); SemanticKITTI labels (Behley et al., ICCV 2019,
CC BY-NC-SA 4.0).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from elite_ros.checkpoint import CheckpointMetadata, make_metadata, save_checkpoint
from elite_ros.cloud import scan_from_arrays
from elite_ros.device import cpu_supports_precision
from elite_ros.kitti import read_bin, read_label
from elite_ros.labels import IGNORE_ID, to_training_ids
from elite_ros.metrics import confusion_matrix, iou_per_class, mean_iou
from elite_ros.segmenter import Segmenter
from elite_ros.student import Student, StudentInput
from elite_ros.voxel import in_range_mask

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))
LABELLED_SCAN = DATA / "semantickitti" / "spvnas_000000" / "000000.bin"
UNLABELLED_SCAN = DATA / "kitti_odometry" / "seq00" / "000000.bin"
PRECISIONS = ("fp32", "bf16")
BACKEND = "native"
DEFAULT_STEPS = 60
DEFAULT_LR = 3e-3  # Adam; fits the single scan to many classes within ~60 steps
PROGRESS_EVERY = 5  # steps between progress lines on stderr


def fit(points: np.ndarray, labels: np.ndarray, metadata: CheckpointMetadata, steps: int, lr: float,
        seed: int) -> tuple[Student, float, float]:
    """Fit a fresh student to one scan (BN in train mode); returns (model in eval mode, final loss, seconds)."""
    torch.manual_seed(seed)
    model = Student(sparse_backend=BACKEND).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    keep = in_range_mask(points[:, :3], metadata.voxel_config)
    inputs = points[keep].copy()
    inputs[:, 3] *= np.float32(metadata.intensity_scale)
    # the same scan every step: voxelise once
    batch = StudentInput.from_points(torch.from_numpy(inputs), voxel_config=metadata.voxel_config)
    target = torch.from_numpy(labels[keep].astype(np.int64))
    loss_value, start = float("nan"), time.perf_counter()
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(batch).logits.float(), target, ignore_index=IGNORE_ID)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        loss_value = loss.item()
        if step % PROGRESS_EVERY == 0 or step in (1, steps):
            print(f"step {step}/{steps} loss {loss_value:.4f} {time.perf_counter() - start:.1f} s",
                  file=sys.stderr, flush=True)
    return model.eval(), loss_value, time.perf_counter() - start


def segmentation_scores(ground_truth: np.ndarray, prediction: np.ndarray, valid: np.ndarray) -> dict:
    """mIoU (reference metric, classes 1..19) and accuracy over valid points with ground truth != 0."""
    labelled = valid & (ground_truth != IGNORE_ID)
    miou = mean_iou(iou_per_class(confusion_matrix(ground_truth, prediction)))
    accuracy = float((prediction[labelled] == ground_truth[labelled]).mean())
    return {"miou": round(miou, 4), "accuracy": round(accuracy, 4)}


def compare(predictions: dict, valid: np.ndarray, ground_truth: np.ndarray | None) -> dict:
    """Agreement of bf16 with fp32 on the valid (in-range) points, plus per-precision class counts / scores."""
    reference, other = predictions["fp32"], predictions["bf16"]
    difference = np.abs(other.probability[valid] - reference.probability[valid])
    entry = {"points": int(valid.shape[0]), "points_in_range": int(valid.sum()),
             "class_agreement": round(float((other.class_id[valid] == reference.class_id[valid]).mean()), 6),
             "prob_abs_diff_mean": float(f"{difference.mean():.3g}"),
             "prob_abs_diff_max": float(f"{difference.max():.3g}"),
             "distinct_classes": {p: int(np.unique(predictions[p].class_id[valid]).size) for p in PRECISIONS}}
    if ground_truth is not None:
        entry["vs_ground_truth"] = {p: segmentation_scores(ground_truth, predictions[p].class_id, valid)
                                   for p in PRECISIONS}
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"fit steps (default {DEFAULT_STEPS})")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"Adam learning rate (default {DEFAULT_LR})")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--runs", type=int, default=5, help="timed predict runs per precision (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--save", type=Path, default=None, help="keep the fitted checkpoint here (default: temp)")
    args = parser.parse_args()
    if not cpu_supports_precision("bf16"):
        print(json.dumps({"error": "this CPU has no native bf16 units (AVX512-BF16 or AMX): bf16 CPU inference "
                                   "is refused, nothing to compare"}, indent=2))
        return
    for path in (LABELLED_SCAN, LABELLED_SCAN.with_suffix(".label"), UNLABELLED_SCAN):
        if not path.is_file():
            parser.error(f"missing data file {path} (set ELITE_ROS_DATA)")
    torch.set_num_threads(args.threads)
    load_at_start = round(os.getloadavg()[0], 2)

    labelled = read_bin(LABELLED_SCAN)
    ground_truth = to_training_ids(read_label(LABELLED_SCAN.with_suffix(".label"), labelled.shape[0]))
    unlabelled = read_bin(UNLABELLED_SCAN)
    metadata = make_metadata(Student(), trained=False)  # package defaults: voxel grid, KITTI intensity scale
    model, loss, seconds = fit(labelled, ground_truth, metadata, args.steps, args.lr, args.seed)
    report: dict = {"torch": torch.__version__, "torch_threads": args.threads, "backend": BACKEND,
                    "cpu_load_1min_at_start": load_at_start,
                    "fit": {"scan": str(LABELLED_SCAN), "steps": args.steps, "lr": args.lr, "optimiser": "Adam",
                            "final_loss": round(loss, 4),  # of the last step, before its update
                            "seconds": round(seconds, 1)}}
    metadata.training = {"purpose": "benchmarks/precision_agreement.py: fitted to ONE scan, not a real model",
                         "scan": LABELLED_SCAN.name, "steps": args.steps, "lr": args.lr, "final_loss": round(loss, 4)}

    with tempfile.TemporaryDirectory(prefix="elite_precision_") as tmp:
        path = save_checkpoint(args.save or Path(tmp) / "fitted_one_scan.safetensors", model, metadata)
        segmenters = {p: Segmenter.from_checkpoint(path, device="cpu", precision=p, backend=BACKEND)
                      for p in PRECISIONS}
    scans = {"labelled_semantickitti": (labelled, ground_truth), "unlabelled_kitti_seq00": (unlabelled, None)}
    report["scans"] = {}
    for name, (points, truth) in scans.items():
        scan = scan_from_arrays(points[:, :3], points[:, 3])
        predictions = {p: segmenters[p].predict(scan) for p in PRECISIONS}
        valid = in_range_mask(points[:, :3], metadata.voxel_config) & np.isfinite(points[:, :3]).all(axis=1)
        report["scans"][name] = compare(predictions, valid, truth)

    scan = scan_from_arrays(unlabelled[:, :3], unlabelled[:, 3])
    samples: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for segmenter in segmenters.values():  # warm-up on the real scan
        segmenter.predict(scan)
    for _ in range(args.runs):  # alternate, so both precisions see the same machine load
        for p in PRECISIONS:
            samples[p].append(segmenters[p].predict(scan).timings_ms["total"])
    report["latency_ms_median"] = {p: round(float(np.median(v)), 1) for p, v in samples.items()}
    report["latency"] = {"scan": str(UNLABELLED_SCAN), "runs": args.runs, "warmup": 1,
                         "note": "wall clock on a shared CPU: pessimistic"}
    report["cpu_load_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
