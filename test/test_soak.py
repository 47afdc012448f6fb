"""Soak: thousands of messages of every kind through one handler; outputs, counters and memory stay right.

The full 2,000-message soak (with real Luminar clouds mixed in) is marked slow: even the 8-channel student
costs ~20 ms of CPU per small scan (fixed per-layer overhead), ~40-150 ms of wall time on a loaded 2-core
machine. CI runs the same mix reduced to 500 messages (one 500,000-point cloud included), single-threaded
torch (multi-threading tiny tensors only adds contention).
"""
from __future__ import annotations

import dataclasses
import gc

import numpy as np
import psutil
import pytest

from elite_ros.bag import TYPESTORE, iter_messages
from elite_ros.cloud import make_cloud
from elite_ros.handler import SegmentationHandler
from elite_ros.params import SegmentParams

MESSAGES = 2000
CI_MESSAGES = 500
BIG_POINTS = 500_000
RSS_LIMIT_MB = 50.0
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
PointField = TYPESTORE.types["sensor_msgs/msg/PointField"]


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    import torch

    from elite_ros.checkpoint import make_metadata, save_checkpoint
    from elite_ros.segmenter import Segmenter
    from elite_ros.student import Student, StudentConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8))
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model,
                           make_metadata(model, trained=False))
    yield Segmenter.from_checkpoint(path, device="cpu", max_points=2000, backend="native")
    torch.set_num_threads(threads)


def cloud(i: int, xyz: np.ndarray, intensity: np.ndarray | None = None):
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    if intensity is not None:
        fields["intensity"] = intensity
    return make_cloud(fields, Header(stamp=Time(sec=i, nanosec=0), frame_id="lidar"))


def malformed(i: int, rng: np.random.Generator, kind: int):
    good = cloud(i, rng.uniform(-20, 20, (40, 3)).astype(np.float32))
    if kind == 0:  # buffer shorter than row_step * height
        return dataclasses.replace(good, data=good.data[:-7])
    if kind == 1:  # no z field
        return dataclasses.replace(good, fields=good.fields[:2])
    if kind == 2:  # unknown datatype
        bad = PointField(name="z", offset=8, datatype=42, count=1)
        return dataclasses.replace(good, fields=[*good.fields[:2], bad])
    return dataclasses.replace(good, point_step=4)  # fields overlap / beyond the point


def message_stream(count: int, real_clouds: list, seed: int = 0):
    """(kind, msg) with kind in valid | malformed; header.stamp.sec = position in the stream."""
    rng = np.random.default_rng(seed)
    big_at = {count // 2} if count < 1000 else {count // 3, 2 * count // 3}
    for i in range(count):
        roll = rng.random()
        if i in big_at:
            yield "valid", cloud(i, rng.uniform(-45, 45, (BIG_POINTS, 3)).astype(np.float32))
        elif roll < 0.04:
            yield "malformed", malformed(i, rng, int(rng.integers(4)))
        elif roll < 0.08:
            yield "valid", cloud(i, np.zeros((0, 3), np.float32))  # empty
        elif roll < 0.12:
            yield "valid", cloud(i, np.full((64, 3), np.nan, np.float32))  # all NaN
        elif roll < 0.16:
            yield "valid", cloud(i, np.array([[5.0, 1.0, -1.0]], np.float32), np.array([0.3], np.float32))
        elif real_clouds and roll < 0.18:
            msg = real_clouds[i % len(real_clouds)]
            yield "valid", dataclasses.replace(msg, header=Header(stamp=Time(sec=i, nanosec=0), frame_id="lidar"))
        else:
            n = int(rng.integers(20, 300))
            xyz = rng.uniform(-30, 30, (n, 3)).astype(np.float32)
            xyz[:, 2] = rng.uniform(-3, 1.5, n)
            yield "valid", cloud(i, xyz, rng.uniform(0, 1, n).astype(np.float32))


def run_soak(segmenter, count: int, real_clouds: list, warmup: int) -> None:
    """`warmup` messages run before the memory baseline is taken (allocator pools and caches settle)."""
    handler = SegmentationHandler(segmenter, SegmentParams())
    process = psutil.Process()
    valid = malformed_count = ok = 0
    baseline = None
    for i, (kind, msg) in enumerate(message_stream(count, real_clouds)):
        if i == warmup:
            gc.collect()
            baseline = process.memory_info().rss
        result = handler.process(msg)
        if kind == "valid":
            valid += 1
            assert result.ok, f"message {i}: {result.error}"
            ok += 1
            assert set(result.outputs) == {"segmentation", "visualization", "filtered"}
            for out in result.outputs.values():
                assert out.header.stamp.sec == i
            n = msg.width * msg.height
            assert result.outputs["segmentation"].width * result.outputs["segmentation"].height == n
        else:
            malformed_count += 1
            assert not result.ok and "malformed" in result.error, f"message {i} was not rejected"
    gc.collect()
    growth_mb = (process.memory_info().rss - baseline) / 2**20
    c = handler.counters
    assert c.received == count and c.processed == valid == ok and c.rejected == malformed_count > 0
    assert c.failed == 0
    assert growth_mb < RSS_LIMIT_MB, f"resident memory grew by {growth_mb:.1f} MB"


@pytest.mark.timeout(600)
def test_soak_mixed_messages(segmenter):
    run_soak(segmenter, CI_MESSAGES, real_clouds=[], warmup=100)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_with_real_luminar_clouds(segmenter, luminar_bags):
    real = [m.msg for m in iter_messages(luminar_bags["mcap"], msgtypes=["sensor_msgs/msg/PointCloud2"])]
    run_soak(segmenter, MESSAGES, real_clouds=real, warmup=200)
