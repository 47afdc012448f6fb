"""The report folder of a segmentation run: report.md, metrics.json and four figures.

Written atomically (`elite_ros.atomic.atomic_dir`): report.md, metrics.json, confusion.png,
per_class_iou.png, latency.png, bev.png (the bird's-eye view of one frame, `elite_ros.bev`). The numbers
come from `elite_ros.evaluate.Evaluation`; class names and colours are its model's (`Evaluation.classes`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elite_ros.atomic import atomic_dir
from elite_ros.bev import BEV_EXTENT_M, ERROR_RGB, BevFrame, bev_panels
from elite_ros.evaluate import Evaluation
from elite_ros.handler import PROCESSING_STAGES
from elite_ros.labels import ClassTable

KITTI_ATTRIBUTION = (
    "KITTI data: Geiger, Lenz, Urtasun, *Are we ready for Autonomous Driving? The KITTI Vision Benchmark "
    "Suite*, CVPR 2012 (CC BY-NC-SA 3.0)."
)
SEMANTICKITTI_ATTRIBUTION = (
    "SemanticKITTI labels: Behley et al., *SemanticKITTI: A Dataset for Semantic Scene Understanding of "
    "LiDAR Sequences*, ICCV 2019 (CC BY-NC-SA 4.0)."
)
REPORT_FILES = ("report.md", "metrics.json", "confusion.png", "per_class_iou.png", "latency.png", "bev.png")


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
    """Write report.md, metrics.json and the four PNGs into `out_dir`, atomically; returns `out_dir`.

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
        classes = evaluation.classes
        _plot_confusion(evaluation.confusion, classes, tmp / "confusion.png", figure_note)
        _plot_iou(evaluation.iou, metrics["miou"], classes, tmp / "per_class_iou.png", figure_note)
        _plot_latency(evaluation.latency_ms, evaluation.stage_ms, tmp / "latency.png", figure_note)
        plot_bev(evaluation.bev, classes, tmp / "bev.png", figure_note)
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
    names = m["class_names"]
    if m["labelled_frames"]:
        lines += [
            f"## Accuracy (SemanticKITTI protocol: the model's {len(names) - 1} classes, class 0 '{names[0]}' "
            "ignored, accumulated over the run)",
            "",
            f"**mIoU: {_fmt(m['miou'], 100)} %**",
            "",
            "| class | IoU % | ground-truth points | predicted points |",
            "|---|---:|---:|---:|",
        ]
        cm = np.asarray(m["confusion"])
        for c in range(1, len(names)):
            name = names[c]
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
    lines += ["## Bird's-eye view", "", _bev_text(m["bev"]), "", "![bird's-eye view](bev.png)", ""]
    lines += ["## Figures", "", "![confusion](confusion.png)", "", "![per-class IoU](per_class_iou.png)", "",
              "![latency](latency.png)", ""]
    if m["attributions"]:
        lines += ["## Data", ""] + [f"- {a}" for a in m["attributions"]] + [""]
    return "\n".join(lines)


def _bev_text(bev: dict[str, Any] | None) -> str:
    """Which frame the bird's-eye view shows, and why (the rule of `elite_ros.evaluate`)."""
    if bev is None:
        return "No labelled frame with points: no bird's-eye view."
    where = f" ({bev['name']})" if bev["name"] else ""
    return (f"Labelled frame {bev['labelled_frame']}{where}, the frame of median mIoU: its own mIoU is "
            f"{_fmt(bev['miou'], 100)} %, the median per-frame mIoU of the run "
            f"{_fmt(bev['median_frame_miou'], 100)} %. "
            "Chosen while streaming (each frame replaces the kept one when its mIoU is nearer to the median of "
            "the frames so far), so one frame's points are held. Top-down, x forward up, y left, metres, "
            f"±{BEV_EXTENT_M:g} m: ground truth, prediction, and the errors in red (points of another class than "
            f"the ground truth's; unlabelled ground truth and unlabelled predictions are not scored, light grey); "
            f"{bev['points']:,} points.")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_confusion(confusion: np.ndarray, classes: ClassTable, path: Path, figure_note: str = "") -> None:
    """Row-normalised (C-1)x(C-1) confusion (class 0 dropped), rows = ground truth."""
    plt = _pyplot()
    cm = confusion[1:, 1:].astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, cm / rows, np.nan)
    names = classes.names[1:]
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


def _plot_iou(iou: np.ndarray, miou: float | None, classes: ClassTable, path: Path, figure_note: str = "") -> None:
    """Horizontal bars of per-class IoU in the class palette; absent classes marked n/a."""
    plt = _pyplot()
    names = classes.names[1:]
    colours = classes.palette[1:] / 255.0
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


def plot_bev(frame: BevFrame | None, classes: ClassTable, path: Path, figure_note: str = "",
             extent_m: float = BEV_EXTENT_M) -> None:
    """The bird's-eye view of `frame` (`elite_ros.bev.bev_panels`: ground truth, prediction, errors in red)
    as three equal-aspect top-down panels, x forward up, y left, +-`extent_m` metres; a legend of the
    classes present. Without a frame, three empty panels saying so."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.9), dpi=100)
    panels = bev_panels(frame, classes) if frame is not None and frame.xyz.shape[0] else []
    for position, ax in enumerate(axes):
        if panels:
            panel = panels[position]
            ax.scatter(panel.xy[:, 1], panel.xy[:, 0], c=panel.rgb / 255.0, s=0.4, marker=".", linewidths=0,
                       rasterized=True)
            ax.set_title(panel.title, fontsize=11)
        else:
            ax.text(0.5, 0.5, "no labelled frame", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(extent_m, -extent_m)  # y points left: positive y on the left
        ax.set_ylim(-extent_m, extent_m)
        ax.set_aspect("equal")
        ax.set_xlabel("y (m, left)")
        ax.set_ylabel("x (m, forward)")
        ax.grid(True, linewidth=0.3, alpha=0.5)
    if panels and frame is not None:
        present = np.union1d(np.unique(frame.ground_truth), np.unique(frame.prediction))
        handles = [Patch(color=classes.palette[c] / 255.0, label=classes.names[c]) for c in present]
        handles.append(Patch(color=f"#{ERROR_RGB[0]:02x}{ERROR_RGB[1]:02x}{ERROR_RGB[2]:02x}", label="error"))
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 11), fontsize=8, frameon=False)
    title = "Bird's-eye view" + (f": {frame.name}" if frame is not None and frame.name else "")
    fig.suptitle(title + (f" ({figure_note})" if figure_note else ""))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
