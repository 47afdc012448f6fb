#!/usr/bin/env python3
"""Sim-to-real: a checkpoint's mIoU and per-class IoU on the real labelled SemanticKITTI scans.

The three real labelled scans of the test fixtures (evaluation only, never training data):
- ``spvnas``: the full 123,389-point scan with intensity (`semantickitti/spvnas_000000`);
- ``o3d_000700`` and ``o3d_000750``: the Open3D-ML demo scans, xyz only (no intensity), grid-subsampled;
  000700 is stored with the sensor at (0, -100, 0) and is shifted by +100 m in y.
Each is segmented by `Segmenter` exactly as `elite-ros evaluate` does (same range filter, same metric:
`elite_ros.metrics`), with intensity where the scan has it, and without (zeros) where it has none. Also
reported: the IoU per range band (points nearer / farther than 15 m) and the share of real points of
each class predicted as each other class for the classes the fine split confuses.

    .venv/bin/python benchmarks/sim_to_real.py --checkpoint elite_ros/assets/<default>.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from elite_ros.cloud import scan_from_arrays
from elite_ros.labels import CLASS_NAMES, NUM_CLASSES, to_training_ids
from elite_ros.metrics import confusion_matrix, iou_per_class, mean_iou
from elite_ros.segmenter import Segmenter

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))
O3D_000700_SENSOR_Y = -100.0  # metres: where Open3D-ML stores the sensor of scan 000700 (data README)
NEAR_FAR_M = 15.0  # range band boundary, metres
WATCHED = ("road", "sidewalk", "terrain", "car", "vegetation", "building")  # where the fine split fails


def real_scans() -> dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
    """name -> (xyz (N, 3) float32 sensor frame, intensity (N,) or None, training ids (N,))."""
    scans = {}
    spvnas = DATA / "semantickitti" / "spvnas_000000"
    points = np.fromfile(spvnas / "000000.bin", np.float32).reshape(-1, 4)
    labels = to_training_ids(np.fromfile(spvnas / "000000.label", np.uint32))
    scans["spvnas"] = (points[:, :3].copy(), points[:, 3].copy(), labels)
    o3d = DATA / "semantickitti" / "open3d_ml_npy"
    for frame in ("000700", "000750"):
        xyz = np.load(o3d / f"{frame}_points.npy").astype(np.float32)
        if frame == "000700":
            xyz[:, 1] -= O3D_000700_SENSOR_Y
        ids = np.load(o3d / f"{frame}_labels.npy").reshape(-1).astype(np.uint8)
        scans[f"o3d_{frame}"] = (xyz, None, ids)
    return scans


def _iou_dict(confusion: np.ndarray) -> dict[str, float | None]:
    return {CLASS_NAMES[c]: (None if np.isnan(v) else round(float(v), 4))
            for c, v in zip(range(1, NUM_CLASSES), iou_per_class(confusion))}


def evaluate(segmenter: Segmenter, xyz: np.ndarray, intensity: np.ndarray | None, truth: np.ndarray) -> dict:
    prediction = segmenter.predict(scan_from_arrays(xyz, intensity)).class_id
    confusion = confusion_matrix(truth, prediction)
    distance = np.linalg.norm(xyz[:, :2], axis=1)
    bands = {}
    for name, mask in (("near", distance < NEAR_FAR_M), ("far", distance >= NEAR_FAR_M)):
        bands[name] = round(mean_iou(iou_per_class(confusion_matrix(truth[mask], prediction[mask]))), 4)
    confused = {}
    for name in WATCHED:
        c = CLASS_NAMES.index(name)
        row = confusion[c, 1:]
        if row.sum():
            top = np.argsort(row)[::-1][:3]
            confused[name] = {CLASS_NAMES[1 + t]: round(float(row[t] / row.sum()), 3) for t in top}
    return {"miou": round(mean_iou(iou_per_class(confusion)), 4), "iou": _iou_dict(confusion),
            "miou_by_range": bands, "predicted_as": confused, "points": int(len(truth)),
            "intensity": intensity is not None, "confusion": confusion}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="student .safetensors (default: the bundled default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-intensity", action="store_true", help="also drop the spvnas scan's intensity")
    parser.add_argument("--tta-votes", type=int, default=1,
                        help="test-time votes per scan (rotations and shifts, as `elite-ros evaluate`)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segmenter = Segmenter.from_checkpoint(args.checkpoint, device="cpu", warmup=False,
                                          tta_votes=args.tta_votes)
    results, total = {}, np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for name, (xyz, intensity, truth) in real_scans().items():
        result = evaluate(segmenter, xyz, None if args.no_intensity else intensity, truth)
        total += result.pop("confusion")
        results[name] = result
    mean = float(np.mean([r["miou"] for r in results.values()]))
    print(json.dumps({"checkpoint": str(args.checkpoint or "bundled default"),
                      "trained": segmenter.trained, "tta_votes": args.tta_votes, "mean_miou_of_scans": round(mean, 4),
                      "pooled": {"miou": round(mean_iou(iou_per_class(total)), 4), "iou": _iou_dict(total)},
                      "scans": results}, indent=2))


if __name__ == "__main__":
    main()
