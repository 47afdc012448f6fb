"""Picture: a synthetic camera image with the frame's LiDAR points projected on it, coloured by class.

Top: the rendered image with every LiDAR point that projects into it (P2 · Tr) drawn in its class
colour (SemanticKITTI palette). Bottom: the camera's own per-pixel class map in the same palette, so
the two can be compared. Prints JSON with the agreement between the point and pixel classes.

    .venv/bin/python benchmarks/overlay_synthetic.py /tmp/synthetic_overlay.png --seed 0 --frame 0
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from elite_ros.labels import CLASS_NAMES, NUM_CLASSES, palette_rgb, to_training_ids  # noqa: E402
from elite_ros_training.data.projection import project_points, projection_matrix  # noqa: E402
from elite_ros_training.synthetic import IMAGE_HEIGHT, IMAGE_WIDTH, KITTI_P2, KITTI_TR, SyntheticSequence  # noqa: E402


def overlay(image: np.ndarray, pixels: np.ndarray, classes: np.ndarray, radius: int = 1) -> np.ndarray:
    """Draw (M, 2) (row, col) pixels as (2 radius + 1)^2 squares of their class colour on a copy of `image`."""
    out = image.copy()
    colours = palette_rgb()[classes]
    h, w = image.shape[:2]
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r = np.clip(pixels[:, 0] + dr, 0, h - 1)
            c = np.clip(pixels[:, 1] + dc, 0, w - 1)
            out[r, c] = colours
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame", type=int, default=0)
    args = parser.parse_args(argv)

    frame = SyntheticSequence(frames=args.frame + 1, seed=args.seed).frame(args.frame)
    classes = to_training_ids(frame.scan.label)
    projected = project_points(frame.scan.xyz, projection_matrix(KITTI_P2, KITTI_TR), IMAGE_WIDTH, IMAGE_HEIGHT)
    point_classes = classes[projected.index]
    pixel_classes = frame.camera.class_map[projected.pixels[:, 0], projected.pixels[:, 1]]

    fig, axes = plt.subplots(2, 1, figsize=(12.42 * 1.2, 3.75 * 2.4 + 1.0), dpi=100)
    axes[0].imshow(overlay(frame.camera.image, projected.pixels, point_classes))
    axes[0].set_title(f"synthetic frame {args.frame} (seed {args.seed}): {len(projected.index)} of "
                      f"{len(classes)} LiDAR points projected with P2·Tr, coloured by their label")
    axes[1].imshow(palette_rgb()[frame.camera.class_map])
    axes[1].set_title("camera class map (ground truth of the rendered pixels; black = sky)")
    for ax in axes:
        ax.axis("off")
    present = sorted(set(np.unique(classes)) | set(np.unique(frame.camera.class_map)) - {0})
    handles = [Patch(color=palette_rgb()[c] / 255.0, label=CLASS_NAMES[c]) for c in present if c]
    fig.legend(handles=handles, loc="lower center", ncol=10, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    plt.close(fig)

    print(json.dumps({
        "out": str(args.out), "seed": args.seed, "frame": args.frame, "points": int(len(classes)),
        "points_in_image": int(len(projected.index)),
        "class_agreement": round(float((point_classes == pixel_classes).mean()), 4),
        "classes_in_scan": [CLASS_NAMES[c] for c in range(1, NUM_CLASSES) if c in set(classes.tolist())],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
