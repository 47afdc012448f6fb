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


def _bev_frames():
    """Three labelled frames of 600 points whose own mIoU is 1.0, 0.0 and 0.4 (the median), in that order."""
    rng = np.random.default_rng(3)
    frames = []
    for wrong_share in (0.0, 1.0, 0.4):
        xyz = np.column_stack([rng.uniform(-45, 45, (600, 2)), rng.uniform(-2, 1, 600)]).astype(np.float32)
        gt = rng.integers(1, 20, 600).astype(np.uint8)
        pred = gt.copy()
        wrong = rng.random(600) < wrong_share
        pred[wrong] = gt[wrong] % 19 + 1  # another class, never 0
        frames.append((xyz, gt, pred))
    unscored = np.arange(0, 600, 50)  # some points the metric ignores in the median frame
    frames[2][1][unscored[::2]], frames[2][2][unscored[1::2]] = 0, 0
    return frames


def test_bev_keeps_the_median_frame_and_reads_only_kept_frames_points():
    from elite_ros.cloud import scan_from_arrays

    ev = Evaluation()
    reads = []
    for number, (xyz, gt, pred) in enumerate(_bev_frames()):
        def points(xyz=xyz, number=number):
            reads.append(number)
            return scan_from_arrays(xyz)
        ev.add_labels(gt, pred, points=points, name=f"frame {number}")
    assert len(ev.frame_miou) == 3 and ev.frame_miou[0] == 1.0 and ev.frame_miou[1] == 0.0
    assert 0.0 < ev.frame_miou[2] < 1.0
    assert ev.bev is not None and ev.bev.labelled_frame == 2 and ev.bev.name == "frame 2"
    assert ev.bev.miou == ev.frame_miou[2] == float(np.median(ev.frame_miou))
    assert reads == [0, 2]  # frame 1 never became the candidate: its points were never read
    assert ev.metrics()["bev"]["labelled_frame"] == 2


def test_bev_frame_takes_labels_by_message_position_and_crops_the_view():
    from elite_ros.bev import BevFrame
    from elite_ros.cloud import Scan

    xyz = np.array([[1, 2, 0], [80, 0, 0], [np.nan, 0, 0], [-3, -49, 1]], np.float32)
    scan = Scan(xyz=xyz, intensity=None, index=np.array([0, 2, 3, 5]), num_points=6)
    gt, pred = np.array([1, 9, 2, 9, 9, 3]), np.array([1, 9, 4, 9, 9, 3])
    frame = BevFrame.from_scan(scan, gt, pred, miou=0.5, labelled_frame=0)
    np.testing.assert_array_equal(frame.xyz, xyz[[0, 3]])  # 80 m and NaN are out of the view
    assert frame.ground_truth.tolist() == [1, 3] and frame.prediction.tolist() == [1, 3]


def test_bev_figure_draws_the_three_panels_with_exactly_the_wrong_points_in_red(tmp_path, monkeypatch):
    import matplotlib.axes

    from elite_ros.cloud import scan_from_arrays
    from elite_ros.labels import palette_rgb

    ev = Evaluation()
    frames = _bev_frames()
    for xyz, gt, pred in frames:
        ev.add_labels(gt, pred, points=scan_from_arrays(xyz))
    drawn = []
    original = matplotlib.axes.Axes.scatter

    def record(ax, x, y, *args, **kwargs):
        drawn.append((ax, np.asarray(x), np.asarray(y), np.asarray(kwargs["c"])))
        return original(ax, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", record)
    out = write_report(tmp_path / "report", ev)
    xyz, gt, pred = frames[2]
    assert len(drawn) == 3 and len({id(ax) for ax, *_ in drawn}) == 3  # three panels, one scatter each
    for ax, x, y, _ in drawn:  # top-down: y (left) horizontal with left on the left, x (forward) up
        np.testing.assert_array_equal(np.sort(x), np.sort(xyz[:, 1]))
        np.testing.assert_array_equal(np.sort(y), np.sort(xyz[:, 0]))
        assert ax.get_xlim() == (50.0, -50.0) and ax.get_ylim() == (-50.0, 50.0) and ax.get_aspect() == 1.0
    np.testing.assert_allclose(drawn[0][3], palette_rgb()[gt] / 255.0)  # ground truth in the palette
    np.testing.assert_allclose(drawn[1][3], palette_rgb()[pred] / 255.0)  # prediction
    _, x, y, colours = drawn[2]
    red = np.all(colours == [1.0, 0.0, 0.0], axis=1)
    wrong = (gt != pred) & (gt != 0) & (pred != 0)  # what the metric counts as wrong
    assert wrong.sum() > 100 and red.sum() == wrong.sum()
    assert set(zip(x[red], y[red])) == set(zip(xyz[wrong, 1], xyz[wrong, 0]))
    assert red[-int(wrong.sum()):].all()  # drawn last, on top of the grey points
    with Image.open(out / "bev.png") as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[1] > 2.4 * pixels.shape[0]  # three square panels side by side
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum() > 50
    text = (out / "report.md").read_text()
    assert "## Bird's-eye view" in text and "![bird's-eye view](bev.png)" in text
    assert f"Labelled frame 2, the frame of median mIoU: its own mIoU is {ev.frame_miou[2] * 100:.1f} %" in text


def test_evaluation_and_report_use_the_models_classes(tmp_path):
    import custom_classes

    from elite_ros.labels import ClassTable

    five = ClassTable.build(custom_classes.NAMES, custom_classes.PALETTE,
                            {int(k): v for k, v in custom_classes.LEARNING_MAP.items()})
    ev = Evaluation(classes=five)
    ev.add_labels(np.array([1, 1, 2, 3, 4, 0]), np.array([1, 2, 2, 3, 3, 1]))
    assert ev.confusion.shape == (5, 5)
    metrics = ev.metrics()
    assert metrics["class_names"] == custom_classes.NAMES and list(metrics["iou"]) == custom_classes.NAMES[1:]
    assert metrics["iou"]["ground"] == pytest.approx(1 / 2) and metrics["iou"]["vehicle"] == 0.0
    text = (write_report(tmp_path / "r", ev) / "report.md").read_text()
    assert "the model's 4 classes, class 0 'void' ignored" in text
    assert "| ground | 50.0 | 2 | 1 |" in text and "| car |" not in text
    with pytest.raises(ValueError, match="0..4"):
        ev.add_labels(np.array([5]), np.array([1]))
