#!/usr/bin/env python3
"""How KITTI-like is the synthetic world? Synthetic scans against the real labelled SemanticKITTI scans.

Prints JSON with, for each real labelled scan and for synthetic frames of a few seeds:

- `points`: points per scan; `median_range_m` and `range_hist` (fraction of points per xy-range bin);
- `class_share_pct`: share of points per training class (unlabelled = 0 left out of the classes);
- `z_pct`: per class and xy-range band, the 5 / 50 / 95th percentile of z in the sensor frame, metres;
- `step_m`: height of terrain / sidewalk / parking above the neighbouring road (median and quartiles of
  the per-cell differences of 1 m cell median heights, road cells within 2 m), metres;
- `intensity_pct`: per class, the 5 / 50 / 95th percentile of intensity and the share of exact zeros
  (only the spvnas scan among the real ones has intensity);
- `thickness_cm`: per class, the median over 0.5 m voxels (>= 10 points) of the root of the smallest
  eigenvalue of the point covariance: how thick a surface looks (porous foliage, rough grass), cm;
- `range_band_share_pct`: per range band, the class shares there (what a scan shows near and far);
- `road_plane`: least-squares plane z = z0 + x tan(pitch) + y tan(roll) through the road points at 3-10 m:
  the sensor's height and tilt over the road (degrees; pitch > 0: the road rises ahead);
- `elevation_bands`: per band of beam elevation (about 8 rings each), the points (share of the scan) and
  their median range: how the upper beams see far and the lowest ones lose points to the ego car.

The two Open3D-ML scans are grid-subsampled (one point per 0.06 m voxel, measured: at 0.06 m no voxel
holds more than 2 of their points), so synthetic frames are also reported after the same subsampling
(`synthetic_grid006`) for a like-for-like comparison with them; the spvnas scan is a full scan.
`summary` puts the means side by side. Real data: KITTI (Geiger et al., CVPR 2012) and SemanticKITTI
(Behley et al., ICCV 2019), CC BY-NC-SA, read from ../shared/data for measurement only.

    .venv/bin/python benchmarks/synthetic_realism.py --seeds 0 1 2 --frames 2 > /tmp/realism.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from elite_ros.labels import CLASS_NAMES, to_training_ids

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))
RANGE_BINS = [0, 5, 10, 15, 20, 30, 40, 60, 80, 120]  # metres, xy range
Z_BANDS = [(0, 10), (10, 20), (20, 40)]  # metres, xy range bands for the z percentiles
SHARE_BANDS = [(0, 10), (10, 20), (20, 120)]  # metres
ELEVATION_BANDS = [3.0, 0.0, -2.5, -5.0, -7.8, -11.0, -15.0, -19.0, -26.0]  # degrees, about 8 rings each
O3D_GRID = 0.06  # metres: the Open3D-ML demo scans' subsampling cell (measured, see the docstring)
O3D_Y_SHIFT_700 = 100.0  # metres: 000700 is stored with the sensor at y = -100 (shared/data/README.md)
MIN_POINTS = 30  # fewest points for a percentile to be reported
CELL = 1.0  # metres: cells of the step-height statistic
STEP_NEIGHBOUR = 2  # cells: road cells within this Chebyshev distance count as neighbours
VOXEL = 0.5  # metres: voxels of the thickness statistic
VOXEL_MIN_POINTS = 10
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}


def load_real() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """The three labelled real scans: name -> (xyz (N, 3) sensor frame, training ids (N,), intensity or None)."""
    kitti = DATA / "semantickitti"
    points = np.fromfile(kitti / "spvnas_000000" / "000000.bin", np.float32).reshape(-1, 4)
    labels = np.fromfile(kitti / "spvnas_000000" / "000000.label", np.uint32)
    out = {"spvnas_000000": (points[:, :3].astype(np.float64), to_training_ids(labels), points[:, 3])}
    for name, dy in (("000700", O3D_Y_SHIFT_700), ("000750", 0.0)):
        xyz = np.load(kitti / "open3d_ml_npy" / f"{name}_points.npy").astype(np.float64)
        xyz[:, 1] += dy
        train = np.load(kitti / "open3d_ml_npy" / f"{name}_labels.npy").reshape(-1).astype(np.uint8)
        out[f"o3d_{name}"] = (xyz, train, None)
    return out


def grid_subsample(xyz: np.ndarray, cell: float) -> np.ndarray:
    """Indices keeping the first point of every `cell`-metre voxel (sorted)."""
    key = np.floor(xyz / cell).astype(np.int64)
    _, first = np.unique(key, axis=0, return_index=True)
    return np.sort(first)


def _pct(values: np.ndarray, qs=(5, 50, 95), digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in np.percentile(values, qs)]


def _cell_medians(xy: np.ndarray, z: np.ndarray) -> dict[tuple[int, int], float]:
    key = np.floor(xy / CELL).astype(np.int64)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, z = key[order], z[order]
    if len(z) == 0:
        return {}
    change = np.flatnonzero(np.any(np.diff(key, axis=0) != 0, axis=1)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(z)]])
    return {(int(key[a, 0]), int(key[a, 1])): float(np.median(z[a:b])) for a, b in zip(starts, ends) if b - a >= 3}


def step_heights(xyz: np.ndarray, train: np.ndarray, max_range: float = 30.0) -> dict:
    """Median heights of terrain / sidewalk / parking cells minus the neighbouring road cells, metres."""
    near = np.linalg.norm(xyz[:, :2], axis=1) < max_range
    road = _cell_medians(xyz[near & (train == CLASS_ID["road"]), :2], xyz[near & (train == CLASS_ID["road"]), 2])
    out = {}
    offsets = [(i, j) for i in range(-STEP_NEIGHBOUR, STEP_NEIGHBOUR + 1) for j in range(-STEP_NEIGHBOUR,
                                                                                           STEP_NEIGHBOUR + 1)]
    for name in ("terrain", "sidewalk", "parking"):
        mask = near & (train == CLASS_ID[name])
        cells = _cell_medians(xyz[mask, :2], xyz[mask, 2])
        diffs = [z - road[(cx + i, cy + j)] for (cx, cy), z in cells.items() for i, j in offsets
                 if (cx + i, cy + j) in road]
        if len(diffs) >= 10:
            out[f"{name}_minus_road"] = {"median": round(float(np.median(diffs)), 3),
                                         "quartiles": _pct(np.array(diffs), (25, 75), 3), "pairs": len(diffs)}
    return out


def thickness(xyz: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """Per class: median over 0.5 m voxels of sqrt(smallest covariance eigenvalue), cm."""
    out = {}
    for c in range(1, len(CLASS_NAMES)):
        p = xyz[train == c]
        if len(p) < VOXEL_MIN_POINTS:
            continue
        _, inverse, counts = np.unique(np.floor(p / VOXEL).astype(np.int64), axis=0, return_inverse=True,
                                       return_counts=True)
        inverse = inverse.reshape(-1)
        keep = counts[inverse] >= VOXEL_MIN_POINTS
        if not keep.any():
            continue
        p, inverse = p[keep], inverse[keep]
        n = np.bincount(inverse)
        valid = n > 0
        mean = np.stack([np.bincount(inverse, p[:, k]) for k in range(3)], 1)[valid] / n[valid, None]
        second = np.stack([np.stack([np.bincount(inverse, p[:, a] * p[:, b]) for b in range(3)], 1)
                           for a in range(3)], 1)[valid] / n[valid, None, None]
        cov = second - mean[:, :, None] * mean[:, None, :]
        smallest = np.clip(np.linalg.eigvalsh(cov)[:, 0], 0.0, None)
        if len(smallest) >= 5:
            out[CLASS_NAMES[c]] = round(float(np.median(np.sqrt(smallest))) * 100.0, 2)
    return out


def scan_stats(xyz: np.ndarray, train: np.ndarray, intensity: np.ndarray | None) -> dict:
    """Every statistic of one scan (see the module docstring)."""
    r = np.linalg.norm(xyz[:, :2], axis=1)
    labelled = train > 0
    share = {CLASS_NAMES[c]: round(100.0 * float(np.mean(train[labelled] == c)), 2) for c in range(1, len(CLASS_NAMES))}
    z_pct: dict[str, dict[str, list[float]]] = {}
    for c in range(1, len(CLASS_NAMES)):
        for lo, hi in Z_BANDS:
            m = (train == c) & (r >= lo) & (r < hi)
            if m.sum() >= MIN_POINTS:
                z_pct.setdefault(CLASS_NAMES[c], {})[f"{lo}-{hi}m"] = _pct(xyz[m, 2])
    band_share = {}
    for lo, hi in SHARE_BANDS:
        m = labelled & (r >= lo) & (r < hi)
        band_share[f"{lo}-{hi}m"] = {"points_pct": round(100.0 * float(m.sum()) / max(int(labelled.sum()), 1), 1),
                                     **{CLASS_NAMES[c]: round(100.0 * float(np.mean(train[m] == c)), 1)
                                        for c in range(1, len(CLASS_NAMES)) if m.any() and np.any(train[m] == c)}}
    elevation = np.degrees(np.arctan2(xyz[:, 2], r))
    bands = {}
    for hi, lo in zip(ELEVATION_BANDS[:-1], ELEVATION_BANDS[1:]):
        m = (elevation < hi) & (elevation >= lo)
        bands[f"{hi:g}..{lo:g}deg"] = [round(100.0 * float(m.mean()), 1),
                                       round(float(np.median(r[m])), 1) if m.any() else None]
    near_road = (train == CLASS_ID["road"]) & (r > 3.0) & (r < 10.0)
    road_plane = None
    if near_road.sum() >= MIN_POINTS:
        a = np.c_[np.ones(int(near_road.sum())), xyz[near_road, :2]]
        coef = np.linalg.lstsq(a, xyz[near_road, 2], rcond=None)[0]
        road_plane = {"z0_m": round(float(coef[0]), 3), "pitch_deg": round(float(np.degrees(np.arctan(coef[1]))), 2),
                      "roll_deg": round(float(np.degrees(np.arctan(coef[2]))), 2)}
    out = {
        "points": int(len(xyz)),
        "unlabelled_pct": round(100.0 * float(np.mean(~labelled)), 2),
        "median_range_m": round(float(np.median(r)), 2),
        "range_hist": {f"{a}-{b}m": round(float(np.mean((r >= a) & (r < b))), 3)
                       for a, b in zip(RANGE_BINS[:-1], RANGE_BINS[1:])},
        "class_share_pct": share,
        "range_band_share_pct": band_share,
        "elevation_bands": bands,
        "road_plane": road_plane,
        "z_pct": z_pct,
        "step_m": step_heights(xyz, train),
        "thickness_cm": thickness(xyz, train),
    }
    if intensity is not None:
        out["intensity_pct"] = {CLASS_NAMES[c]: _pct(intensity[train == c]) + [round(float(np.mean(
            intensity[train == c] == 0.0)), 2)] for c in range(1, len(CLASS_NAMES)) if (train == c).sum() >= MIN_POINTS}
    return out


def synthetic_scans(seeds: list[int], frames: int, drive_frames: int):
    """(name, xyz, training ids, intensity) of `frames` evenly spaced LiDAR frames of each seed's drive."""
    from elite_ros_training.synthetic.lidar import scan
    from elite_ros_training.synthetic.sequence import SyntheticSequence

    for seed in seeds:
        sequence = SyntheticSequence(frames=drive_frames, seed=seed)
        for index in np.linspace(0, drive_frames - 1, frames).round().astype(int):
            rng = np.random.default_rng([seed, int(index), 1])  # as SyntheticSequence.frame draws the scan
            s = scan(sequence.scene, sequence.poses[int(index)], rng, sequence.lidar)
            yield f"seed{seed}_frame{index}", s.xyz.astype(np.float64), to_training_ids(s.label), s.intensity


def _mean_of(stats: list[dict], path: list[str]) -> float | None:
    values = []
    for s in stats:
        v = s
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
            if v is None:
                break
        if isinstance(v, (int, float)):
            values.append(float(v))
    return round(float(np.mean(values)), 3) if values else None


def summary(real: dict, synthetic: dict, synthetic_grid: dict) -> dict:
    """Means side by side: real full scan, real subsampled scans, synthetic full, synthetic subsampled."""
    groups = {"real_spvnas": [real["spvnas_000000"]], "real_o3d": [real["o3d_000700"], real["o3d_000750"]],
              "synthetic": list(synthetic.values()), "synthetic_grid006": list(synthetic_grid.values())}
    out: dict = {"points": {}, "median_range_m": {}, "range_hist": {}, "class_share_pct": {},
                 "terrain_minus_road_m": {},
                 "sidewalk_minus_road_m": {}, "road_z_p5_p95_10_20m": {}, "thickness_cm": {}, "road_plane": {}}
    for g, stats in groups.items():
        out["points"][g] = _mean_of(stats, ["points"])
        out["median_range_m"][g] = _mean_of(stats, ["median_range_m"])
        out["range_hist"][g] = {b: _mean_of(stats, ["range_hist", b]) for b in stats[0]["range_hist"]}
        out["terrain_minus_road_m"][g] = _mean_of(stats, ["step_m", "terrain_minus_road", "median"])
        out["road_plane"][g] = {k: _mean_of(stats, ["road_plane", k]) for k in ("z0_m", "pitch_deg", "roll_deg")}
        out["sidewalk_minus_road_m"][g] = _mean_of(stats, ["step_m", "sidewalk_minus_road", "median"])
        lo = [s["z_pct"].get("road", {}).get("10-20m") for s in stats]
        lo = [v for v in lo if v]
        out["road_z_p5_p95_10_20m"][g] = ([round(float(np.mean([v[0] for v in lo])), 2),
                                            round(float(np.mean([v[2] for v in lo])), 2)] if lo else None)
        out["thickness_cm"][g] = {name: _mean_of(stats, ["thickness_cm", name])
                                  for name in ("road", "sidewalk", "terrain", "vegetation", "car", "building")}
    for c in CLASS_NAMES[1:]:
        out["class_share_pct"][c] = {g: _mean_of(stats, ["class_share_pct", c]) for g, stats in groups.items()}
    out["intensity_p50"] = {c: {"real_spvnas": real["spvnas_000000"].get("intensity_pct", {}).get(c, [None] * 3)[1],
                                "synthetic": _mean_of([{"v": s.get("intensity_pct", {}).get(c, [None] * 3)[1]}
                                                       for s in synthetic.values()], ["v"])}
                            for c in CLASS_NAMES[1:]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthetic drives (default 0 1 2)")
    parser.add_argument("--frames", type=int, default=2, help="frames per drive, evenly spaced (default 2)")
    parser.add_argument("--drive-frames", type=int, default=100, help="length of each drive (default 100)")
    parser.add_argument("--summary-only", action="store_true", help="print only the side-by-side summary")
    args = parser.parse_args(argv)

    real = {name: scan_stats(*scan) for name, scan in load_real().items()}
    synthetic, synthetic_grid = {}, {}
    start = time.perf_counter()
    for name, xyz, train, intensity in synthetic_scans(args.seeds, args.frames, args.drive_frames):
        synthetic[name] = scan_stats(xyz, train, intensity)
        keep = grid_subsample(xyz, O3D_GRID)
        synthetic_grid[name] = scan_stats(xyz[keep], train[keep], None)
    elapsed = time.perf_counter() - start
    result = {"summary": summary(real, synthetic, synthetic_grid),
              "synthetic_seconds": round(elapsed, 1)}
    if not args.summary_only:
        result.update({"real": real, "synthetic": synthetic, "synthetic_grid006": synthetic_grid})
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
