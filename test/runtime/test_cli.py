"""`elite-ros` end to end: info, segment, evaluate (hand-computed IoU), demo, parameter errors."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elite_ros import cli
from elite_ros.bag import TYPESTORE, BagWriter, bag_info, iter_messages
from elite_ros.cloud import POINTCLOUD2_TYPE, make_cloud
from elite_ros.commands import demo
from elite_ros.labels import LEARNING_MAP_INV
from elite_ros.report import REPORT_FILES

CLOUD_TYPE = POINTCLOUD2_TYPE


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from elite_ros.checkpoint import make_metadata, save_checkpoint
    from elite_ros.student import Student, StudentConfig

    torch.manual_seed(0)
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model,
                           make_metadata(model, trained=False))


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_info:  # bad input: one line "error: ..." and exit code 2 (elite_ros.command)
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_info_lists_topics_layout_and_point_counts(capsys, luminar_bags):
    code, out, _ = run(capsys, "info", luminar_bags["ros1"])
    assert code == 0
    assert re.search(r"/luminar_pointcloud +sensor_msgs/msg/PointCloud2  x5", out)
    assert "/base_scan" in out and "nav_msgs/msg/Odometry" in out
    assert "x FLOAT32@0, y FLOAT32@4, z FLOAT32@8, intensity FLOAT32@16" in out and "laser_id UINT16@28" in out
    assert "point_step 32" in out and "1 x 35707 = 35,707 points (35,707 finite)" in out
    assert out.count(" points (") == 5


def test_segment_writes_bag_and_summary(capsys, luminar_bags, tiny_checkpoint, tmp_path):
    out_bag = tmp_path / "seg"
    code, out, err = run(capsys, "segment", luminar_bags["sqlite3"], out_bag, "--filtered", "--json", "--no-progress",
                         "--checkpoint", tiny_checkpoint, "--device", "cpu")
    assert code == 0, err
    assert "UNTRAINED" in err
    assert "/luminar_pointcloud -> /luminar_pointcloud/segmentation, /luminar_pointcloud/filtered" in out
    assert "5 frames, 180,822 points" in out and "p99" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 5 and summary["latency"]["count"] == 5
    assert bag_info(out_bag)["/luminar_pointcloud/filtered"] == (CLOUD_TYPE, 5)
    code, _, err = run(capsys, "segment", luminar_bags["sqlite3"], out_bag, "--checkpoint", tiny_checkpoint)
    assert code == 2 and "exists" in err


def test_invalid_parameter_is_named(capsys, luminar_bags, tmp_path):
    code, _, err = run(capsys, "segment", luminar_bags["mcap"], tmp_path / "o", "-p", "tta_votes=0")
    assert code == 2 and "'tta_votes'" in err
    code, _, err = run(capsys, "segment", luminar_bags["mcap"], tmp_path / "o", "-p", "no_such=1")
    assert code == 2 and "'no_such'" in err
    assert not (tmp_path / "o").exists()


def labelled_bag(path: Path) -> Path:
    """Two frames with ground truth (`label`, raw ids + instance bits) and stored predictions (`class_id`)."""
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    frames = [  # (gt training ids, predicted training ids): see test_evaluate for the hand computation
        ([1, 1, 1, 2, 2, 0, 3], [1, 1, 2, 2, 0, 1, 3]),
        ([4, 4], [5, 5]),
    ]
    with BagWriter(path) as writer:
        for i, (gt, pred) in enumerate(frames):
            n = len(gt)
            raw = np.array([LEARNING_MAP_INV[c] for c in gt], np.uint32) | (np.uint32(3) << 16)
            msg = make_cloud({"x": np.arange(n, dtype=np.float32), "y": np.zeros(n, np.float32),
                              "z": np.zeros(n, np.float32), "label": raw, "class_id": np.array(pred, np.uint8)},
                             Header(stamp=Time(sec=i, nanosec=0), frame_id="lidar"))
            writer.write("/cloud", CLOUD_TYPE, (i + 1) * 10**8, msg)
    return path


def test_evaluate_stored_predictions_gives_the_hand_computed_iou(capsys, tmp_path):
    bag = labelled_bag(tmp_path / "labelled")
    report = tmp_path / "report"
    code, out, err = run(capsys, "evaluate", bag, "--stored-predictions", "class_id", "--report", report,
                         "--no-progress")
    assert code == 0, err
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["iou"]["car"] == pytest.approx(2 / 3)
    assert metrics["iou"]["bicycle"] == pytest.approx(1 / 2)
    assert metrics["iou"]["motorcycle"] == pytest.approx(1.0)
    assert metrics["iou"]["truck"] == 0.0 and metrics["iou"]["other-vehicle"] == 0.0
    assert metrics["iou"]["road"] is None
    assert metrics["miou"] == pytest.approx(13 / 30)
    assert metrics["context"]["ground_truth"] == "field 'label'"
    assert "mIoU 43.3 %" in out
    assert sorted(p.name for p in report.iterdir()) == sorted(REPORT_FILES)


def test_evaluate_runs_the_network_on_a_semantickitti_folder(capsys, data_dir, tiny_checkpoint, tmp_path):
    folder = data_dir / "semantickitti" / "mmdet3d_seq00_000000_subset50"
    report = tmp_path / "report"
    code, out, err = run(capsys, "evaluate", folder, "--report", report, "--checkpoint", tiny_checkpoint,
                         "--device", "cpu", "--no-progress")
    assert code == 0, err
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["frames"] == 1 and metrics["labelled_frames"] == 1 and metrics["points"] == 50
    assert int(np.asarray(metrics["confusion"]).sum()) == 50
    assert metrics["latency"]["count"] == 1
    text = (report / "report.md").read_text()
    assert "Geiger" in text and "Behley" in text and "UNTRAINED" in text
    code, _, err = run(capsys, "evaluate", folder, "--report", report, "--checkpoint", tiny_checkpoint)
    assert code == 2 and "exists" in err


def test_demo_on_the_semantickitti_fixture(capsys, monkeypatch, tiny_checkpoint, tmp_path):
    monkeypatch.setattr(demo, "_synthetic_writer", lambda: None)
    cache = tmp_path / "cache"
    code, out, err = run(capsys, "demo", "--cache", cache, "--checkpoint", tiny_checkpoint, "--device", "cpu",
                         "--no-progress")
    assert code == 0, err
    assert "UNTRAINED" in out and "report: " in out
    report = Path(out.split("report: ")[1].split()[0]).parent
    assert sorted(p.name for p in report.iterdir()) == sorted(REPORT_FILES)
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["labelled_frames"] == 1 and metrics["points"] == 123_389
    segmented = report.parent / "segmented"
    assert {t for t in bag_info(segmented)} == {f"/kitti/velodyne_points/{o}" for o in
                                                ("segmentation", "visualization", "filtered")}
    # the demo input is made once and reused
    demo_bag = cache / "demo_semantickitti"
    stamp = demo_bag.stat().st_mtime_ns
    assert demo.make_demo_input(cache)[0] == demo_bag and demo_bag.stat().st_mtime_ns == stamp
    assert len(list(iter_messages(demo_bag))) == 1


def test_stored_raw_id_predictions_use_the_evaluate_kind_rule(capsys, tmp_path):
    """`--stored-predictions gt_label` holds raw ids (as CloudGroundTruth reads `gt_label`): one rule for both."""
    from elite_ros.ground_truth import ground_truth_kind

    assert (ground_truth_kind("label"), ground_truth_kind("gt_label"), ground_truth_kind("class_id")) == (
        "raw", "raw", "train")
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    gt, pred = [1, 1, 1, 2, 2, 0, 3], [1, 1, 2, 2, 0, 1, 3]
    raw = lambda ids: np.array([LEARNING_MAP_INV[c] for c in ids], np.uint32) | (np.uint32(5) << 16)  # noqa: E731
    path = tmp_path / "raw_predictions"
    with BagWriter(path) as writer:
        n = len(gt)
        writer.write("/cloud", CLOUD_TYPE, 10**8, make_cloud(
            {"x": np.arange(n, dtype=np.float32), "y": np.zeros(n, np.float32), "z": np.zeros(n, np.float32),
             "label": raw(gt), "gt_label": raw(pred)}, Header(stamp=Time(sec=0, nanosec=0), frame_id="lidar")))
    report = tmp_path / "report"
    code, out, err = run(capsys, "evaluate", path, "--stored-predictions", "gt_label", "--report", report,
                         "--no-progress")
    assert code == 0, err
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["iou"]["car"] == pytest.approx(2 / 3) and metrics["iou"]["bicycle"] == pytest.approx(1 / 2)


def test_one_definition_of_outputs_and_free_paths(tmp_path):
    from elite_ros import handler, replay

    assert demo.OUTPUTS is handler.OUTPUTS and not hasattr(demo, "_free_path") and not hasattr(demo, "OUTPUTS_ALL")
    assert replay.free_path(tmp_path / "r") == tmp_path / "r"
    (tmp_path / "r").mkdir()
    (tmp_path / "r_2").mkdir()
    assert replay.free_path(tmp_path / "r") == tmp_path / "r_3"


def test_evaluate_a_model_with_its_own_classes(capsys, tmp_path):
    """A 5-class checkpoint: ground truth through its learning map, its names in the tables, its BEV palette."""
    import custom_classes

    checkpoint = custom_classes.save_checkpoint(tmp_path / "five.safetensors")
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(0)
    raw_ids = np.array([0, 3, 100, 101, 200, 300, 400, 401, 40], np.uint32)  # 40: SemanticKITTI road, unknown here
    all_raw = []
    for frame in range(2):
        points = np.column_stack([rng.uniform(-40, 40, (3000, 2)), rng.uniform(-2, 1, 3000),
                                  rng.uniform(0, 1, 3000)]).astype(np.float32)
        raw = raw_ids[rng.integers(0, raw_ids.size, 3000)]
        points.tofile(folder / f"{frame:06d}.bin")
        (raw | (np.uint32(frame + 1) << 16)).tofile(folder / f"{frame:06d}.label")  # with instance bits
        all_raw.append(raw)
    report = tmp_path / "report"
    code, out, err = run(capsys, "evaluate", folder, "--report", report, "--checkpoint", checkpoint, "--device", "cpu",
                         "-p", "filtered_classes=[]", "--no-progress")
    assert code == 0, err
    assert "(4 classes)" in out
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["class_names"] == custom_classes.NAMES and list(metrics["iou"]) == custom_classes.NAMES[1:]
    confusion = np.asarray(metrics["confusion"])
    learning_map = {int(k): v for k, v in custom_classes.LEARNING_MAP.items()}
    expected_rows = np.bincount([learning_map.get(int(r), 0) for r in np.concatenate(all_raw)], minlength=5)
    np.testing.assert_array_equal(confusion.sum(axis=1), expected_rows)  # raw ids through the model's map
    text = (report / "report.md").read_text()
    for name in custom_classes.NAMES[1:]:
        assert f"| {name} | " in text
    assert "| road |" not in text and "the model's 4 classes, class 0 'void' ignored" in text
    assert metrics["bev"]["labelled_frame"] in (0, 1) and (report / "bev.png").is_file()
    code, _, err = run(capsys, "evaluate", folder, "--report", tmp_path / "r2", "--checkpoint", checkpoint,
                       "--device", "cpu", "--no-progress")  # the default filtered_classes are SemanticKITTI's
    assert code == 2 and "'filtered_classes'" in err and "void, ground, wall, plant, vehicle" in err


# ------------------------------------------------------------------------------------------ bad recordings, outputs


def _clouds_bag(path: Path, count: int, *, malformed: bool = False, points: int = 64) -> Path:
    """`count` small clouds on /cloud (every one truncated when `malformed`)."""
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    rng = np.random.default_rng(0)
    with BagWriter(path) as writer:
        for i in range(count):
            xyz = rng.uniform(-20, 20, (points, 3)).astype(np.float32)
            msg = make_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]},
                             Header(stamp=Time(sec=i, nanosec=0), frame_id="lidar"))
            if malformed:
                msg.data = msg.data[:-1]
            writer.write("/cloud", CLOUD_TYPE, (i + 1) * 10**8, msg)
    return path


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith(("warning:", "note:"))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_segment_errors_on_bad_recordings_and_outputs_are_one_line_naming_the_file(
        capsys, luminar_bags, tiny_checkpoint, tmp_path, monkeypatch):
    common = ("--no-progress", "--checkpoint", tiny_checkpoint, "--device", "cpu")
    damaged = tmp_path / "damaged"
    shutil.copytree(luminar_bags["sqlite3"], damaged)
    storage = next(damaged.glob("*.db3"))
    storage.chmod(0o644)
    data = bytearray(storage.read_bytes())
    middle = len(data) // 4096 // 2 * 4096
    data[middle:middle + 4096] = bytes(4096)  # one zeroed sqlite3 page: apsw.CorruptError while reading
    storage.write_bytes(bytes(data))
    code, _, err = run(capsys, "segment", damaged, tmp_path / "out1", *common)
    assert code == 2 and _one_error_line(err).startswith(f"error: {damaged}: cannot read: CorruptError")
    plain = tmp_path / "plain"
    plain.write_text("a file\n")
    code, _, err = run(capsys, "segment", luminar_bags["mcap"], plain / "out", *common)
    assert code == 2 and _one_error_line(err) == f"error: cannot write {plain}/out: {plain} is a file, not a folder"
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: refuse as the kernel refuses a user
        monkeypatch.setattr("elite_ros.atomic.tempfile.mkdtemp", _permission_denied)
    code, _, err = run(capsys, "segment", luminar_bags["mcap"], read_only / "out", *common)
    assert code == 2 and _one_error_line(err).startswith(f"error: cannot write {read_only}/out: no permission")
    monkeypatch.undo()
    source = _clouds_bag(tmp_path / "all_malformed", 3, malformed=True)
    code, _, err = run(capsys, "segment", source, tmp_path / "out2", *common)
    assert code == 2 and err.splitlines()[-1].startswith(f"error: {source}: none of its 3 clouds could be segmented")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all_malformed", "damaged", "plain", "read_only"]


def _permission_denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir", "?"))


def _segment_process(source: Path, out: Path, checkpoint: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "elite_ros.cli", "segment", str(source), str(out), "--no-progress",
               "--checkpoint", str(checkpoint), "--device", "cpu", "-p", "tta_votes=4"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_partial(process: subprocess.Popen, folder: Path, name: str, timeout_s: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        partial = [p for p in folder.iterdir() if p.name.startswith(f".{name}.partial-")]
        if partial and any(partial[0].rglob("*.mcap")):
            time.sleep(0.5)  # a few clouds into the run
            assert process.poll() is None, "the run ended before the signal: give it more clouds"
            return partial[0]
        time.sleep(0.05)
    raise AssertionError(f"no partial output appeared: {process.communicate()}")


@pytest.fixture(scope="module")
def long_bag(tmp_path_factory) -> Path:
    """600 clouds of 2,000 points: a run of several seconds, long enough to be interrupted."""
    return _clouds_bag(tmp_path_factory.mktemp("long") / "in", 600, points=2000)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_abort_segment_cleanly(tiny_checkpoint, long_bag, tmp_path, signum):
    """One line, exit 128 + signal, no output and no partial folder (SIGTERM used to leave the partial bag
    behind, SIGINT to print a KeyboardInterrupt traceback)."""
    process = _segment_process(long_bag, tmp_path / "out", tiny_checkpoint)
    _wait_for_partial(process, tmp_path, "out")
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    assert _one_error_line(err) == f"error: interrupted by {name}: stopped, no unfinished output left"
    assert list(tmp_path.iterdir()) == []


def test_a_killed_segment_run_leaves_a_partial_that_the_next_run_removes(capsys, tiny_checkpoint, long_bag, tmp_path):
    process = _segment_process(long_bag, tmp_path / "out", tiny_checkpoint)
    partial = _wait_for_partial(process, tmp_path, "out")
    process.kill()
    process.communicate(timeout=60)
    assert partial.is_dir()  # SIGKILL: nothing can clean up
    small = _clouds_bag(tmp_path / "small", 2)
    code, _, err = run(capsys, "segment", small, tmp_path / "out", "--no-progress", "--checkpoint", tiny_checkpoint,
                       "--device", "cpu")
    assert code == 0, err
    assert not partial.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out", "small"]


def test_parameter_values_the_cli_cannot_use_are_one_line_each(capsys, luminar_bags, tmp_path):
    """`-p min_range=.nan` ran (exit 0) with no point labelled; `-p 'max_range=[1,'` gave a YAML traceback."""
    for item, message in (("min_range=.nan", "error: invalid parameter 'min_range': must be a finite number, got nan"),
                          ("max_range=[1,", "error: invalid parameter 'max_range': value '[1,' is not valid YAML: "),
                          ("filtered_classes={a: 1, a: 2}", "found duplicate key 'a'")):
        code, _, err = run(capsys, "segment", luminar_bags["mcap"], tmp_path / "o", "-p", item)
        assert code == 2 and message in _one_error_line(err), err
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"/**:\n  ros__parameters:\n    checkpoint: caf\xe9\n")
    code, _, err = run(capsys, "segment", luminar_bags["mcap"], tmp_path / "o", "--params-file", latin)
    assert code == 2 and f"{latin} is not UTF-8 text" in _one_error_line(err)
    assert not (tmp_path / "o").exists()
