"""Evaluation: accumulation over a run, latency statistics, ground truth, the report folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elite_ros.evaluate import Evaluation, latency_stats
from elite_ros.ground_truth import ground_truth_ids
from elite_ros.report import REPORT_FILES, write_report

# Frame 1 by hand: pairs (gt, pred) = (1,1) (1,1) (1,2) (2,2) (2,0) (0,1) (3,3).
# (2,0) falls in the dropped column 0 and (0,1) in the dropped row 0, so after cropping:
#   car(1):     TP 2, FP 0, FN 1 -> 2/3
#   bicycle(2): TP 1, FP 1, FN 0 -> 1/2
#   motorcycle(3): TP 1           -> 1
GT_1 = np.array([1, 1, 1, 2, 2, 0, 3])
PRED_1 = np.array([1, 1, 2, 2, 0, 1, 3])
# Frame 2: truck(4) always predicted as other-vehicle(5): both IoU 0.
GT_2 = np.array([4, 4])
PRED_2 = np.array([5, 5])


def test_accumulated_over_the_run_not_averaged_per_frame():
    ev = Evaluation()
    ev.add_labels(GT_1, PRED_1)
    ev.add_labels(GT_2, PRED_2)
    assert ev.iou[3] == 0.0 and ev.iou[4] == 0.0
    assert ev.miou == pytest.approx((2 / 3 + 1 / 2 + 1 + 0 + 0) / 5)
    # the same points split differently across frames give the same result
    ev2 = Evaluation()
    both_gt, both_pred = np.concatenate([GT_1, GT_2]), np.concatenate([PRED_1, PRED_2])
    ev2.add_labels(both_gt[:4], both_pred[:4])
    ev2.add_labels(both_gt[4:], both_pred[4:])
    np.testing.assert_array_equal(ev.confusion, ev2.confusion)


def test_ground_truth_kinds():
    raw = np.array([0, 10, 40 | (7 << 16), 252, 52], dtype=np.uint32)  # instance bits, moving car, other-structure
    np.testing.assert_array_equal(ground_truth_ids(raw, "raw"), [0, 1, 9, 1, 0])
    np.testing.assert_array_equal(ground_truth_ids(np.array([0, 5, 19]), "train"), [0, 5, 19])
    with pytest.raises(ValueError, match="0..19"):
        ground_truth_ids(np.array([40]), "train")


def test_latency_stats():
    s = latency_stats([10.0] * 99 + [110.0])
    assert s["count"] == 100 and s["p50_ms"] == 10.0 and s["max_ms"] == 110.0
    assert s["mean_ms"] == pytest.approx(11.0)
    assert latency_stats([]) == {"count": 0}


def test_report_folder(tmp_path: Path):
    ev = Evaluation()
    for i, (gt, pred) in enumerate([(GT_1, PRED_1), (GT_2, PRED_2)]):
        ev.add_labels(gt, pred)
        ev.add_frame({"preprocess": 1.0, "inference": 5.0 + i, "postprocess": 0.5, "total": 6.5 + i}, gt.size)
    out = write_report(tmp_path / "report", ev, context={"input": "hand-made"}, notes=["weights are untrained"],
                       attributions=["SemanticKITTI"])
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(13 / 30)
    assert metrics["iou"]["car"] == pytest.approx(2 / 3)
    assert metrics["iou"]["person"] is None
    assert metrics["frames"] == 2 and metrics["points"] == 9
    assert metrics["latency"]["max_ms"] == 7.5
    text = (out / "report.md").read_text()
    assert "43.3 %" in text and "weights are untrained" in text and "SemanticKITTI" in text
    for png in ("confusion.png", "per_class_iou.png", "latency.png"):
        with Image.open(out / png) as image:
            assert image.size[0] > 300 and image.size[1] > 300
    with pytest.raises(FileExistsError):
        write_report(out, ev)
    write_report(out, Evaluation(), overwrite=True)
    assert json.loads((out / "metrics.json").read_text())["miou"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temp folders left behind


def test_ground_truth_from_cloud_fields():
    from elite_ros.bag import TYPESTORE
    from elite_ros.cloud import make_cloud
    from elite_ros.ground_truth import CloudGroundTruth

    header = TYPESTORE.types["std_msgs/msg/Header"](
        stamp=TYPESTORE.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="l")
    xyz = np.zeros(3, np.float32)
    msg = make_cloud({"x": xyz, "y": xyz, "z": xyz, "label": np.array([10, 40 | (2 << 16), 0], np.uint32),
                      "class_id": np.array([3, 4, 5], np.uint8)}, header)
    auto = CloudGroundTruth()
    np.testing.assert_array_equal(auto(msg), [1, 9, 0])  # raw ids through the learning map
    assert auto.found == "label"
    # class_id is this package's own output: never picked automatically (a segmented bag would score itself)
    assert CloudGroundTruth(exclude=["label"])(msg) is None
    predictions_only = make_cloud({"x": xyz, "y": xyz, "z": xyz, "class_id": np.array([3, 4, 5], np.uint8)}, header)
    assert CloudGroundTruth()(predictions_only) is None
    np.testing.assert_array_equal(CloudGroundTruth("class_id")(msg), [3, 4, 5])  # still selectable by name
    with pytest.raises(ValueError, match="'gt'"):
        CloudGroundTruth("gt")(msg)
    bare = make_cloud({"x": xyz, "y": xyz, "z": xyz}, header)
    assert CloudGroundTruth()(bare) is None
