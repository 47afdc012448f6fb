"""Bag / KITTI-folder replay through the handler: outputs at the original timestamps, inputs untouched."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from elite_ros.bag import bag_info, iter_messages
from elite_ros.cloud import POINTCLOUD2_TYPE, read_points
from elite_ros.evaluate import Evaluation
from elite_ros.ground_truth import CloudGroundTruth
from elite_ros.handler import SegmentationHandler
from elite_ros.labels import to_training_ids
from elite_ros.params import SegmentParams
from elite_ros.recording import KITTI_TOPIC, Recording, ReplayError, is_kitti_folder, iter_kitti
from elite_ros.replay import ReplaySummary, default_output_path, replay

CLOUD_TYPE = POINTCLOUD2_TYPE
TOPIC = "/luminar_pointcloud"


@pytest.fixture(scope="module")
def handler(tmp_path_factory) -> SegmentationHandler:
    import torch

    from elite_ros.checkpoint import make_metadata, save_checkpoint
    from elite_ros.segmenter import Segmenter
    from elite_ros.student import Student, StudentConfig

    torch.manual_seed(0)
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8))
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model,
                           make_metadata(model, trained=False))
    return SegmentationHandler(Segmenter.from_checkpoint(path, device="cpu"), SegmentParams())


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("container", ["ros1", "sqlite3", "mcap"])
def test_segment_luminar_in_every_container(handler, luminar_bags, tmp_path, container):
    source = luminar_bags[container]
    before = tree_hash(source)
    inputs = list(iter_messages(source, topics=[TOPIC]))
    out = tmp_path / "segmented"
    summary = replay(Recording.open(source), handler, output=out, progress=False)
    assert tree_hash(source) == before  # the input is never touched
    assert summary.frames == 5 and summary.rejected == 0 and summary.output == out
    assert summary.points == sum(m.msg.width for m in inputs)
    assert summary.latency["count"] == 5 and summary.latency["p99_ms"] >= summary.latency["p50_ms"] > 0
    assert bag_info(out) == {f"{TOPIC}/segmentation": (CLOUD_TYPE, 5)}
    written = list(iter_messages(out))
    assert [m.timestamp for m in written] == [m.timestamp for m in inputs]
    for got, original in zip(written, inputs):
        assert got.msg.header.stamp == original.msg.header.stamp
        assert got.msg.header.frame_id == original.msg.header.frame_id
        points = read_points(got.msg)
        np.testing.assert_array_equal(points["intensity"], read_points(original.msg)["intensity"])
        assert points["class_id"].max() < 20
    assert "5 frames" in summary.text() and "p99" in summary.text()


def test_all_outputs_and_other_topics(handler, luminar_bags, tmp_path):
    out = tmp_path / "all"
    summary = replay(Recording.open(luminar_bags["ros1"]), handler, output=out, storage="sqlite3", progress=False,
                     outputs=("segmentation", "visualization", "filtered"), keep_other_topics=True)
    info = bag_info(out)
    assert info[f"{TOPIC}/visualization"] == (CLOUD_TYPE, 5) and info[f"{TOPIC}/filtered"] == (CLOUD_TYPE, 5)
    assert info["/base_scan"] == ("sensor_msgs/msg/LaserScan", 5)
    assert info["/base_pose_ground_truth"] == ("nav_msgs/msg/Odometry", 5)
    assert TOPIC not in info and summary.copied == 10
    assert any(p.suffix == ".db3" for p in out.iterdir())


def test_refuses_existing_output_and_output_inside_input(handler, luminar_bags, tmp_path):
    recording = Recording.open(luminar_bags["mcap"])
    existing = tmp_path / "exists"
    existing.mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        replay(recording, handler, output=existing, progress=False)
    copy = tmp_path / "bagcopy"
    shutil.copytree(luminar_bags["mcap"], copy)
    with pytest.raises(ReplayError, match="inside the input"):
        replay(Recording.open(copy), handler, output=copy / "out", progress=False)
    with pytest.raises(ReplayError, match="no topic"):
        replay(recording, handler, output=tmp_path / "x", topics=["/nope"], progress=False)
    with pytest.raises(ReplayError, match="not sensor_msgs"):
        replay(Recording.open(luminar_bags["ros1"]), handler, output=tmp_path / "y", topics=["/base_scan"],
               progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_kitti_sequence_folder_with_labels_and_times(handler, data_dir, tmp_path):
    src = data_dir / "semantickitti" / "mmdet3d_seq00_000000_subset50"
    seq = tmp_path / "sequences" / "00"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "labels").mkdir()
    for i in range(2):  # two frames: the real 50-point scan and its mirror image
        points = np.fromfile(src / "000000.bin", np.float32).reshape(-1, 4).copy()
        points[:, 1] *= 1 - 2 * i
        points.tofile(seq / "velodyne" / f"00000{i}.bin")
        shutil.copy(src / "000000.label", seq / "labels" / f"00000{i}.label")
    (seq / "times.txt").write_text("0.000000e+00\n1.037359e-01\n")
    assert is_kitti_folder(seq) and not is_kitti_folder(tmp_path)
    recording = Recording.open(seq)
    assert recording.kind == "kitti" and recording.is_kitti
    messages = list(iter_kitti(seq))
    assert [m.timestamp for m in messages] == [0, 103_735_900]
    assert [f.name for f in messages[0].msg.fields] == ["x", "y", "z", "intensity", "label"]

    evaluation = Evaluation()
    out = tmp_path / "kitti_segmented"
    summary = replay(recording, handler, output=out, evaluation=evaluation, ground_truth=CloudGroundTruth(),
                     progress=False)
    assert summary.frames == 2 and evaluation.labelled_frames == 2 and evaluation.confusion.sum() == 100
    labels = np.fromfile(src / "000000.label", np.uint32)
    assert evaluation.confusion.sum(axis=1)[to_training_ids(labels)].all()
    written = list(iter_messages(out))
    assert [m.topic for m in written] == [f"{KITTI_TOPIC}/segmentation"] * 2
    np.testing.assert_array_equal(read_points(written[0].msg)["label"], labels)  # ground truth kept


def test_flat_kitti_folder_and_bad_scan(data_dir, tmp_path):
    recording = Recording.open(data_dir / "kitti_odometry" / "seq00")
    assert recording.topics == {KITTI_TOPIC: (CLOUD_TYPE, 2)}
    first = next(iter_kitti(recording.path))
    assert first.msg.width == 124_668 and first.timestamp == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "000000.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ReplayError, match="16-byte"):
        list(iter_kitti(bad))
    with pytest.raises(FileNotFoundError):
        Recording.open(tmp_path / "missing")


def test_default_output_path_is_in_the_current_folder_never_beside_the_input(tmp_path, monkeypatch):
    dataset = tmp_path / "dataset" / "sequences"
    (dataset / "00").mkdir(parents=True)
    (dataset / "run.bag").write_bytes(b"")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert default_output_path(dataset / "run.bag") == work / "run_segmented"
    assert default_output_path(dataset / "00") == work / "00_segmented"  # a KITTI sequence folder
    assert default_output_path(dataset / "00" / ".") == work / "00_segmented"
    (work / "run_segmented").mkdir()
    assert default_output_path(dataset / "run.bag") == work / "run_segmented_2"
    assert default_output_path(dataset / "run.bag", folder=tmp_path) == tmp_path / "run_segmented"


def _write_clouds(path: Path, topics_and_clouds) -> Path:
    from elite_ros.bag import BagWriter

    with BagWriter(path) as writer:
        for stamp, (topic, msg) in enumerate(topics_and_clouds):
            writer.write(topic, CLOUD_TYPE, (stamp + 1) * 1_000_000, msg)
    return path


def _small_cloud(n: int = 4, sec: int = 1):
    from elite_ros.bag import TYPESTORE
    from elite_ros.cloud import make_cloud

    header = TYPESTORE.types["std_msgs/msg/Header"](
        stamp=TYPESTORE.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=0), frame_id="lidar")
    x = np.linspace(2.0, 5.0, n, dtype=np.float32)
    return make_cloud({"x": x, "y": x * 0.5, "z": np.zeros(n, np.float32)}, header)


def test_keep_other_topics_refuses_an_output_topic_already_in_the_input(handler, tmp_path):
    source = _write_clouds(tmp_path / "in", [("/lidar", _small_cloud()), ("/lidar/segmentation", _small_cloud())])
    out = tmp_path / "out"
    with pytest.raises(ReplayError, match="'/lidar/segmentation'.*already exists in the input"):
        replay(Recording.open(source), handler, output=out, topics=["/lidar"], keep_other_topics=True,
               progress=False)
    assert not out.exists()
    # segmenting both topics (nothing copied) or not copying is fine: no topic mixes old and new clouds
    summary = replay(Recording.open(source), handler, output=out, keep_other_topics=True, progress=False)
    assert summary.frames == 2 and bag_info(out)["/lidar/segmentation"] == (CLOUD_TYPE, 1)


class _Failing:
    """A segmenter whose failure message happens to contain 'malformed': it must count as failed."""

    palette = None
    trained = False

    def predict(self, scan):
        raise RuntimeError("malformed tensor in the network")


def test_rejected_and_failed_come_from_the_handler_counters_and_errors_are_capped(handler, tmp_path):
    import dataclasses

    from elite_ros.replay import MAX_STORED_ERRORS

    good = _small_cloud()
    bad = dataclasses.replace(good, data=np.asarray(good.data)[:5])  # shorter than row_step * height
    source = _write_clouds(tmp_path / "mixed", [("/lidar", bad)] * 25 + [("/lidar", good)])
    summary = replay(Recording.open(source), handler, output=None, progress=False, log=lambda line: None)
    assert (summary.rejected, summary.failed, summary.frames) == (25, 0, 1)
    assert len(summary.errors) == MAX_STORED_ERRORS == 20
    failing = SegmentationHandler(_Failing(), SegmentParams())
    with pytest.raises(ReplayError, match="none of its 26 clouds could be segmented"):
        replay(Recording.open(source), failing, output=None, progress=False, log=lambda line: None)
    assert (failing.counters.rejected, failing.counters.failed, failing.counters.processed) == (25, 1, 0)
    text = ReplaySummary(frames=1, rejected=25, failed=1).text()
    assert "26 rejected" not in text and "25 rejected (malformed), 1 failed" in text


def test_one_cloud_raising_anything_is_counted_and_named_and_the_replay_goes_on(handler, tmp_path, monkeypatch):
    """A header numpy cannot lay out (point_step 2**31, legal for a uint32) and a cloud on which anything
    else raises are each one counted, reported skip naming file, topic and stamp; the other clouds are written."""
    import dataclasses

    good = _small_cloud()
    wide = dataclasses.replace(good, point_step=2**31, width=0, row_step=0, data=np.zeros(0, np.uint8))
    source = _write_clouds(tmp_path / "in", [("/lidar", wide), ("/lidar", good), ("/lidar", good), ("/lidar", good)])
    process, calls = handler.process, []

    def raising_on_the_third(msg, outputs, **kwargs):
        calls.append(msg)
        if len(calls) == 3:
            raise MemoryError("out of memory in the network")
        return process(msg, outputs, **kwargs)

    monkeypatch.setattr(handler, "process", raising_on_the_third)
    lines: list[str] = []
    summary = replay(Recording.open(source), handler, output=tmp_path / "out", progress=False, log=lines.append)
    assert (summary.frames, summary.rejected, summary.failed) == (2, 1, 1)
    assert bag_info(tmp_path / "out") == {"/lidar/segmentation": (CLOUD_TYPE, 2)}
    assert lines[0].startswith(f"skipped {source}: /lidar @ 1000000 ns: malformed PointCloud2: point_step 2147483648")
    assert lines[1] == f"skipped {source}: /lidar @ 3000000 ns: unexpected MemoryError: out of memory in the network"


def test_a_recording_whose_clouds_are_all_malformed_writes_no_output(handler, tmp_path):
    import dataclasses

    good = _small_cloud()
    bad = dataclasses.replace(good, data=np.asarray(good.data)[:5])
    source = _write_clouds(tmp_path / "in", [("/lidar", bad)] * 3)
    with pytest.raises(ReplayError, match=f"{source}: none of its 3 clouds could be segmented, so nothing was "
                                          f"written; the first: {source}: /lidar @ 1000000 ns: malformed"):
        replay(Recording.open(source), handler, output=tmp_path / "out", progress=False, log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no partial folder
