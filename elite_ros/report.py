"""The report folder of a segmentation run: report.md, metrics.json and three figures.

Written atomically (`elite_ros.atomic.atomic_dir`): report.md, metrics.json, confusion.png,
per_class_iou.png, latency.png. The numbers come from `elite_ros.evaluate.Evaluation`.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elite_ros.atomic import atomic_dir
from elite_ros.evaluate import Evaluation
from elite_ros.handler import PROCESSING_STAGES
from elite_ros.labels import CLASS_NAMES, NUM_CLASSES, palette_rgb

KITTI_ATTRIBUTION = (
    "KITTI data: Geiger, Lenz, Urtasun, *Are we ready for Autonomous Driving? The KITTI Vision Benchmark "
    "Suite*, CVPR 2012 (CC BY-NC-SA 3.0)."
)
SEMANTICKITTI_ATTRIBUTION = (
    "SemanticKITTI labels: Behley et al., *SemanticKITTI: A Dataset for Semantic Scene Understanding of "
    "LiDAR Sequences*, ICCV 2019 (CC BY-NC-SA 4.0)."
)
REPORT_FILES = ("report.md", "metrics.json", "confusion.png", "per_class_iou.png", "latency.png")


def write_report(
    out_dir: str | Path,
    evaluation: Evaluation,
    *,
    title: str = "elite_ros segmentation report",
    context: dict[str, Any] | None = None,
    attributions: Iterable[str] = (),
    notes: Iterable[str] = (),
    figure_note: str = "",
    overwrite: bool = False,
) -> Path:
    """Write report.md, metrics.json and the three PNGs into `out_dir`, atomically; returns `out_dir`.

    context: extra key/values shown in the report and stored in metrics.json (input, checkpoint, device...).
    attributions: dataset credits printed at the end (e.g. KITTI_ATTRIBUTION).
    notes: lines printed prominently at the top (e.g. "weights are untrained").
    figure_note: short text added to every figure's title (e.g. "UNTRAINED weights").
    Refuses an existing `out_dir` unless `overwrite`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"report folder exists: {out_dir} (choose another or overwrite)")
    metrics = evaluation.metrics()
    metrics["context"] = dict(context or {})
    metrics["notes"] = list(notes)
    metrics["attributions"] = list(attributions)
    with atomic_dir(out_dir, replace=True) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _plot_confusion(evaluation.confusion, tmp / "confusion.png", figure_note)
        _plot_iou(evaluation.iou, metrics["miou"], tmp / "per_class_iou.png", figure_note)
        _plot_latency(evaluation.latency_ms, evaluation.stage_ms, tmp / "latency.png", figure_note)
        (tmp / "report.md").write_text(_markdown(title, metrics))
    return out_dir


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _markdown(title: str, m: dict[str, Any]) -> str:
    lines = [f"# {title}", ""]
    for note in m["notes"]:
        lines += [f"> **{note}**", ""]
    if m["context"]:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in m["context"].items()]
        lines.append("")
    lines += [
        "## Summary",
        "",
        f"- frames: {m['frames']} ({m['labelled_frames']} with ground truth)",
        f"- points: {m['points']:,} ({m['evaluated_points']:,} with a ground-truth class other than unlabelled)",
    ]
    lat = m["latency"]
    if lat.get("count"):
        lines.append(
            f"- latency per frame (total, ms): mean {lat['mean_ms']:.1f}, p50 {lat['p50_ms']:.1f}, "
            f"p90 {lat['p90_ms']:.1f}, p99 {lat['p99_ms']:.1f}, max {lat['max_ms']:.1f}"
        )
    lines.append("")
    if m["labelled_frames"]:
        lines += [
            "## Accuracy (SemanticKITTI protocol: 19 classes, class 0 ignored, accumulated over the run)",
            "",
            f"**mIoU: {_fmt(m['miou'], 100)} %**",
            "",
            "| class | IoU % | ground-truth points | predicted points |",
            "|---|---:|---:|---:|",
        ]
        cm = np.asarray(m["confusion"])
        for c in range(1, NUM_CLASSES):
            name = CLASS_NAMES[c]
            gt_points, predicted_points = int(cm[c, 1:].sum()), int(cm[1:, c].sum())
            lines.append(f"| {name} | {_fmt(m['iou'][name], 100)} | {gt_points:,} | {predicted_points:,} |")
        lines += ["", "n/a: the class occurs neither in the ground truth nor in the prediction "
                  "(left out of the mean).", ""]
    else:
        lines += ["## Accuracy", "", "No ground truth in the input: accuracy not computed.", ""]
    if m["stages_ms"]:
        lines += ["## Timing per stage (ms)", "", "| stage | mean | p50 | p99 | max |", "|---|---:|---:|---:|---:|"]
        for stage, s in m["stages_ms"].items():
            if s.get("count"):
                cells = " | ".join(f"{s[key]:.1f}" for key in ("mean_ms", "p50_ms", "p99_ms", "max_ms"))
                lines.append(f"| {stage} | {cells} |")
        lines.append("")
    lines += ["## Figures", "", "![confusion](confusion.png)", "", "![per-class IoU](per_class_iou.png)", "",
              "![latency](latency.png)", ""]
    if m["attributions"]:
        lines += ["## Data", ""] + [f"- {a}" for a in m["attributions"]] + [""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_confusion(confusion: np.ndarray, path: Path, figure_note: str = "") -> None:
    """Row-normalised 19x19 confusion (class 0 dropped), rows = ground truth."""
    plt = _pyplot()
    cm = confusion[1:, 1:].astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, cm / rows, np.nan)
    names = CLASS_NAMES[1:]
    fig, ax = plt.subplots(figsize=(9, 8), dpi=100)
    image = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    ax.set_title("Confusion (row-normalised; grey rows: class absent from ground truth)"
                 + (f"\n{figure_note}" if figure_note else ""))
    ax.set_facecolor("#d0d0d0")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the ground-truth class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_iou(iou: np.ndarray, miou: float | None, path: Path, figure_note: str = "") -> None:
    """Horizontal bars of per-class IoU in the class palette; absent classes marked n/a."""
    plt = _pyplot()
    names = CLASS_NAMES[1:]
    colours = palette_rgb()[1:] / 255.0
    values = np.nan_to_num(iou, nan=0.0) * 100
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    y = np.arange(len(names))
    ax.barh(y, values, color=colours, edgecolor="black", linewidth=0.5)
    for yi, v in zip(y, iou):
        label = "n/a" if np.isnan(v) else f"{v * 100:.1f}"
        ax.text((0 if np.isnan(v) else v * 100) + 1, yi, label, va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU %")
    ax.set_title(f"Per-class IoU (mIoU {_fmt(miou, 100)} %)" + (f"\n{figure_note}" if figure_note else ""))
    if miou is not None:
        ax.axvline(miou * 100, color="black", linestyle="--", linewidth=1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_latency(
    total_ms: Sequence[float], stage_ms: dict[str, list[float]], path: Path, figure_note: str = ""
) -> None:
    """Per-frame stage times (stacked) and total, with the p50/p99 lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    frames = np.arange(len(total_ms))
    if len(total_ms):
        bottom = np.zeros(len(total_ms))
        for stage in PROCESSING_STAGES[:-1]:  # stacked; the last stage is the total
            values = np.asarray(stage_ms.get(stage, []), dtype=np.float64)
            if values.size == len(total_ms):
                ax.bar(frames, values, bottom=bottom, label=stage, width=0.8)
                bottom += values
        ax.plot(frames, total_ms, "k.-", label="total", linewidth=1)
        for p, style in ((50, "--"), (99, ":")):
            ax.axhline(np.percentile(total_ms, p), color="red", linestyle=style, linewidth=1, label=f"p{p}")
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no timed frames", ha="center", va="center", transform=ax.transAxes)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    ax.set_title("Processing time per frame" + (f" ({figure_note})" if figure_note else ""))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
