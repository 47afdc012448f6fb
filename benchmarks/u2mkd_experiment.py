#!/usr/bin/env python3
"""The U2MKD experiment's evaluation (docs/reference.md §14): mIoU and per-class IoU of runtime checkpoints
on validation drives with camera images, with and without the images, and on the points outside the
camera's field of view. Prints JSON; writes a PNG plot with --plot.

Rows (each a `--row NAME=CHECKPOINT[:MODE]`, MODE one of):
- ``all``: every in-volume point, a fusion checkpoint given each frame's image and calibration (a LiDAR-only
  one needs none);
- ``no_image``: every in-volume point, every image withheld (the fusion student's imputation path);
- ``outside_fov``: only the points that do not project into the image (a fusion checkpoint given the image;
  those points never see it, tested in test/runtime/test_fusion_student.py);
- ``inside_fov``: only the points that do.

A NAME given more than once (e.g. the same row trained with several seeds) is one row: its mIoU and IoUs
are the means over its runs, with each run's figures under ``runs`` and the spread in ``miou_min`` /
``miou_max`` (drawn as an error bar, each run a dot).

Predictions are `Segmenter.predict` (the node's code path: range filter, the model's intensity scale, no
point cap, no TTA); ground truth is the frames' labels through the model's learning map; the confusion is
summed over every frame and IoU taken as in ref §8 (`elite_ros.metrics`).

    .venv/bin/python benchmarks/u2mkd_experiment.py --data runs/synthetic/val_s901_f8x8_dense ... \\
        --row a=row_a.safetensors --row b=fusion.safetensors --row c=u2mkd.safetensors \\
        --row c_no_image=u2mkd.safetensors:no_image --row c_outside_fov=u2mkd.safetensors:outside_fov \\
        --plot u2mkd.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from elite_ros.camera import CameraModel
from elite_ros.cloud import scan_from_arrays
from elite_ros.metrics import confusion_matrix, iou_per_class, mean_iou
from elite_ros.segmenter import Segmenter
from elite_ros.voxel import in_range_mask

MODES = ("all", "no_image", "outside_fov", "inside_fov")


def parse_row(text: str) -> tuple[str, Path, str]:
    """NAME=CHECKPOINT[:MODE] -> (name, checkpoint, mode)."""
    name, _, rest = text.partition("=")
    path, _, mode = rest.partition(":")
    mode = mode or "all"
    if not name or not path or mode not in MODES:
        raise SystemExit(f"--row {text!r}: expected NAME=CHECKPOINT[:{'|'.join(MODES)}]")
    return name, Path(path), mode


def evaluate(checkpoint: Path, mode: str, folders: list[Path], threads: int) -> dict[str, object]:
    """Summed confusion over every frame of `folders` -> IoU per class, mIoU, points counted."""
    import torch

    from elite_ros_training.data.dataset import open_frames

    torch.set_num_threads(threads)
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu", warmup=False)
    classes = segmenter.classes
    confusion = np.zeros((classes.num_classes, classes.num_classes), dtype=np.int64)
    frames_seen = 0
    for folder in folders:
        frames = open_frames(folder, images=True)
        for index in range(len(frames)):
            frame = frames[index]
            if frame.labels is None or frame.image is None or frame.projection is None:
                raise SystemExit(f"{folder} frame {index}: needs labels, an image and a calibration")
            xyz, intensity = frame.points[:, :3], frame.points[:, 3]
            camera = CameraModel(frame.projection, frame.image.shape[1], frame.image.shape[0])
            scan = scan_from_arrays(xyz, intensity)
            if mode == "no_image":
                prediction = segmenter.predict(scan)
            else:
                prediction = segmenter.predict(scan, frame.image, camera)
            keep = in_range_mask(xyz, segmenter.voxel_config)
            in_view = np.zeros(len(xyz), dtype=bool)
            in_view[camera.project(xyz).index] = True
            if mode == "outside_fov":
                keep &= ~in_view
            elif mode == "inside_fov":
                keep &= in_view
            truth = classes.to_training_ids(frame.labels[keep])
            confusion += confusion_matrix(truth, prediction.class_id[keep].astype(np.int64), classes.num_classes)
            frames_seen += 1
    iou = iou_per_class(confusion)
    return {"checkpoint": str(checkpoint), "mode": mode, "model_kind": segmenter.metadata.model_kind,
            "frames": frames_seen, "points": int(confusion[1:, :].sum()), "miou": mean_iou(iou),
            "iou": {name: None if np.isnan(v) else float(v) for name, v in zip(classes.names[1:], iou)}}


def combine(runs: list[dict[str, object]]) -> dict[str, object]:
    """One row from several runs of it: mean mIoU and per-class IoU, the mIoU spread, and the runs."""
    if len(runs) == 1:
        return runs[0]
    mious = [float(run["miou"]) for run in runs]  # type: ignore[arg-type]
    iou = {}
    for name in runs[0]["iou"]:  # type: ignore[union-attr]
        values = [run["iou"][name] for run in runs]  # type: ignore[index]
        iou[name] = None if any(v is None for v in values) else float(np.mean(values))
    return {"mode": runs[0]["mode"], "model_kind": runs[0]["model_kind"], "miou": float(np.mean(mious)),
            "miou_min": min(mious), "miou_max": max(mious), "iou": iou, "runs": runs}


def plot(rows: dict[str, dict[str, object]], path: Path) -> None:
    """mIoU per row, and per-class IoU of every row, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    shown = 0.01  # per-class panel: only the classes some row reaches 1 % IoU on (the others are 0 for all)
    classes = [c for c in rows[names[0]]["iou"] if any((rows[n]["iou"][c] or 0.0) >= shown for n in names)]  # type: ignore[index]
    figure, (left, right) = plt.subplots(1, 2, figsize=(16, 5), gridspec_kw={"width_ratios": [1, 4]})
    mious = [100 * float(rows[n]["miou"]) for n in names]  # type: ignore[arg-type]
    left.bar(names, mious, color=[f"C{i}" for i in range(len(names))])
    for x, (name, value) in enumerate(zip(names, mious)):
        top = value
        runs = rows[name].get("runs")
        if runs:  # several runs: the min..max spread, and each run
            low, top = 100 * float(rows[name]["miou_min"]), 100 * float(rows[name]["miou_max"])  # type: ignore[arg-type]
            left.errorbar(x, value, yerr=[[value - low], [top - value]], color="black", capsize=3)
            left.scatter([x] * len(runs), [100 * float(r["miou"]) for r in runs], color="black", s=8, zorder=3)  # type: ignore[index]
        left.text(x, top + 0.5, f"{value:.1f}", ha="center", fontsize=8)
    left.set_ylim(0, max(mious) * 1.15 + 1)
    left.set_ylabel("mIoU (%)")
    left.set_title("mIoU (bars: mean of the runs; dots: each run)")
    left.set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [100 * (rows[name]["iou"][c] or 0.0) for c in classes]  # type: ignore[index]
        right.bar(np.arange(len(classes)) + (i - (len(names) - 1) / 2) * width, values, width, label=name,
                  color=f"C{i}")
    right.set_xticks(np.arange(len(classes)), classes, rotation=45, ha="right")
    right.set_ylabel("IoU (%)")
    right.set_title(f"per-class IoU (classes at >= {100 * shown:.0f} % in some row)")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="validation sequence folders")
    parser.add_argument("--row", action="append", required=True, metavar="NAME=CHECKPOINT[:MODE]")
    parser.add_argument("--plot", type=Path, help="PNG to write")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    wanted = [parse_row(text) for text in args.row]
    modes: dict[str, str] = {}
    for name, _, mode in wanted:
        if modes.setdefault(name, mode) != mode:
            raise SystemExit(f"row {name!r} is given with modes {modes[name]!r} and {mode!r}: one mode per name")
    runs: dict[str, list[dict[str, object]]] = {}
    for name, checkpoint, mode in wanted:
        runs.setdefault(name, []).append(evaluate(checkpoint, mode, args.data, args.threads))
    rows = {name: combine(results) for name, results in runs.items()}
    if args.plot:
        plot(rows, args.plot)
    print(json.dumps({"data": [str(d) for d in args.data], "rows": rows, "plot": str(args.plot or "")}, indent=1))


if __name__ == "__main__":
    main()
