#!/usr/bin/env python3
"""The KD experiment: runs of the same data and steps compared by validation mIoU and per-class IoU.

Reads each run's ``csv/metrics.csv`` (written by `elite-ros-train fit`): validation mIoU per epoch and the
last epoch's per-class IoU. Prints JSON (final mIoU, per-class IoU, the difference to the first run, the
classes only the camera tells apart called out) and draws one PNG: validation mIoU over the optimiser
steps, and per-class IoU of the last validation side by side.

    .venv/bin/python benchmarks/kd_experiment.py --run row_a=runs/kd/cpu_synthetic_row_a/version_0 \\
        --run row_l=runs/kd/cpu_synthetic_row_l/version_0 --plot kd_experiment.png
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from elite_ros.labels import CLASS_NAMES, palette_rgb

#: classes whose LiDAR geometry is alike and whose camera appearance differs (the ELiTe paper's argument)
CAMERA_CLASSES = ("road", "parking", "sidewalk", "terrain", "vegetation", "fence")


def read_run(folder: Path) -> dict:
    """Validation rows of a run's metrics.csv: steps, mIoU per validation, per-class IoU of the last."""
    path = folder / "csv" / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv in {folder / 'csv'}")
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/mIoU")]
    if not rows:
        raise ValueError(f"{path}: no validation rows yet")
    last = rows[-1]
    iou = {name: (float(last[f"val/iou/{name}"]) if last.get(f"val/iou/{name}") not in (None, "", "nan") else None)
           for name in CLASS_NAMES[1:]}
    return {"steps": [int(r["step"]) for r in rows], "miou": [float(r["val/mIoU"]) for r in rows],
            "final_miou": float(last["val/mIoU"]), "final_step": int(last["step"]), "iou": iou}


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve, bars) = plt.subplots(1, 2, figsize=(16, 6), gridspec_kw={"width_ratios": [1, 2.2]})
    for name, run in runs.items():
        curve.plot(run["steps"], np.asarray(run["miou"]) * 100, "o-", label=name)
    curve.set_xlabel("optimiser step")
    curve.set_ylabel("validation mIoU %")
    curve.set_title("synthetic validation mIoU")
    curve.grid(alpha=0.3)
    curve.legend()
    names = CLASS_NAMES[1:]
    width = 0.8 / len(runs)
    x = np.arange(len(names))
    for index, (name, run) in enumerate(runs.items()):
        values = [np.nan if run["iou"][n] is None else run["iou"][n] * 100 for n in names]
        bars.bar(x + index * width, values, width, label=f"{name} ({run['final_miou'] * 100:.1f} %)")
    for tick, name in enumerate(names):
        if name in CAMERA_CLASSES:
            bars.axvspan(tick - 0.1, tick + 0.9, color=palette_rgb()[CLASS_NAMES.index(name)] / 255.0, alpha=0.15)
    bars.set_xticks(x + 0.4 - width / 2, names, rotation=60, ha="right")
    bars.set_ylabel("IoU %")
    bars.set_title("per-class IoU, last validation (shaded: classes the camera tells apart)")
    bars.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER",
                        help="a run's version folder (repeatable; the first is the baseline)")
    parser.add_argument("--plot", type=Path, help="PNG to write")
    args = parser.parse_args()
    runs = {}
    for item in args.run:
        name, _, folder = item.partition("=")
        runs[name] = read_run(Path(folder))
    baseline = next(iter(runs.values()))
    summary = {}
    for name, run in runs.items():
        delta = {c: (None if run["iou"][c] is None or baseline["iou"][c] is None
                     else round((run["iou"][c] - baseline["iou"][c]) * 100, 1)) for c in CLASS_NAMES[1:]}
        summary[name] = {"final_step": run["final_step"], "val_miou": round(run["final_miou"] * 100, 2),
                         "val_miou_by_validation": [round(v * 100, 2) for v in run["miou"]],
                         "iou": {c: None if v is None else round(v * 100, 1) for c, v in run["iou"].items()},
                         "iou_delta_vs_first": delta,
                         "camera_classes": {c: None if run["iou"][c] is None else round(run["iou"][c] * 100, 1)
                                            for c in CAMERA_CLASSES}}
    if args.plot:
        plot(runs, args.plot)
    print(json.dumps({"runs": summary, "plot": str(args.plot) if args.plot else None}, indent=2))


if __name__ == "__main__":
    main()
