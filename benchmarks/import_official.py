#!/usr/bin/env python3
"""How long `elite-ros-train import-official` takes on a real-sized official checkpoint, and how exactly
the imported student computes the official network's function.

Import time: a ~100 MB Lightning checkpoint is built the way the official ELiTe / 2DPASS code saves one:
the official student of ``official/official_student_seed1.pt`` under ``model_3d.*``, ``--model-2d-mb`` of
``model_2d.*`` tensors, fusion heads, SGD momentum for every parameter (as much again), a scheduler state,
callbacks and an EasyDict config in ``hyper_parameters``. `import_official` (safe read + mapping + checks +
safetensors write) is timed `--runs` times; the median and the minimum are printed, and the safe reader's
share of it. Beside it, torch.load(weights_only=True) on the same file minus its EasyDict (which that
loader refuses) shows what torch's own safe loader takes.

Agreement: ``official/official_student_seed1.ckpt`` is imported and the runtime `Segmenter` (1 torch
thread: spconv's CPU scatter is racy on more; the reference logits come from one) labels the
range-filtered spvnas scan on each backend; printed: the share of kept points whose argmax equals the
official one, the share of labels (Segmenter's output) that do, and max |logit difference|. The same
without the 1x1x1 shortcut transpose shows what the transpose is for.

    .venv/bin/python benchmarks/import_official.py --runs 3

Wall clock on a shared CPU: pessimistic. Data: KITTI (Geiger et al., CVPR 2012, CC BY-NC-SA 3.0).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "test" / "training"))  # the official-checkpoint builders the tests use

from official_fixtures import agreement, lightning_checkpoint, official_config, read_scan, save_official, scan_logits  # noqa: E402

from elite_ros.checkpoint import make_metadata, save_checkpoint  # noqa: E402
from elite_ros.student import Student  # noqa: E402
from elite_ros_training.import_official import import_official, read_official  # noqa: E402
from elite_ros_training.safe_unpickle import load_checkpoint_file  # noqa: E402

OFFICIAL = DATA / "official"
MIB = 1 << 20
DEFAULT_MODEL_2D_MB = 44  # + as much SGD momentum + the student: ~100 MB on disk
DEFAULT_RUNS = 3


def import_timing(scratch: Path, model_2d_mb: int, runs: int) -> dict[str, object]:
    state = torch.load(OFFICIAL / "official_student_seed1.pt", weights_only=True)
    checkpoint = lightning_checkpoint(state, official_config(), model_2d_bytes=model_2d_mb * MIB)
    source = save_official(checkpoint, scratch / "last.ckpt")
    tensors = len(checkpoint["state_dict"])
    plain = dict(checkpoint)
    del plain["hyper_parameters"]
    torch_copy = scratch / "no_easydict.ckpt"
    torch.save(plain, torch_copy)
    del checkpoint, plain

    totals, reads, torch_reads = [], [], []
    for run in range(runs):
        start = time.perf_counter()
        import_official(source, scratch / f"student_{run}.safetensors")
        totals.append(time.perf_counter() - start)
        start = time.perf_counter()
        load_checkpoint_file(source)
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.load(torch_copy, map_location="cpu", weights_only=True)
        torch_reads.append(time.perf_counter() - start)
    return {"checkpoint_mb": round(source.stat().st_size / 1e6, 1),
            "state_dict_tensors": tensors,
            "import_s_median": round(statistics.median(totals), 3), "import_s_min": round(min(totals), 3),
            "safe_read_s_median": round(statistics.median(reads), 3),
            "torch_weights_only_read_s_median": round(statistics.median(torch_reads), 3), "runs": runs}


def agreement_figures(scratch: Path) -> dict[str, object]:
    points = read_scan(DATA)
    keep = np.load(OFFICIAL / "official_student_seed1_keep.npy")
    reference = np.load(OFFICIAL / "official_student_seed1_logits.npy")
    imported = import_official(OFFICIAL / "official_student_seed1.ckpt", scratch / "official.safetensors").path
    weights = read_official(OFFICIAL / "official_student_seed1.ckpt", transpose_shortcuts=False)
    student = Student()
    student.load_state_dict(weights.state, strict=True)
    untransposed = save_checkpoint(scratch / "untransposed.safetensors", student, make_metadata(student))
    figures: dict[str, object] = {"kept_points": int(keep.sum())}
    for backend in ("native", "spconv"):
        try:
            figures[backend] = agreement(*scan_logits(imported, points, backend), reference, keep)
        except Exception as error:  # noqa: BLE001 - a backend that cannot run here is reported, not fatal
            figures[backend] = {"error": f"{type(error).__name__}: {error}"}
    figures["native_without_transpose"] = agreement(*scan_logits(untransposed, points, "native"), reference, keep)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-2d-mb", type=int, default=DEFAULT_MODEL_2D_MB, help="MiB of model_2d.* tensors")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed imports")
    args = parser.parse_args()
    if not (OFFICIAL / "official_student_seed1.ckpt").is_file():
        parser.error(f"missing fixtures under {OFFICIAL} (set ELITE_ROS_DATA)")
    with tempfile.TemporaryDirectory(prefix="elite_ros_import_bench_") as scratch:
        result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                  "torch_threads": torch.get_num_threads(),
                  "import": import_timing(Path(scratch), args.model_2d_mb, args.runs),
                  "agreement": agreement_figures(Path(scratch)),
                  "note": "wall clock on a shared CPU: pessimistic"}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
