"""training/data/dataset.py: reproducible samples per (seed, epoch, index), epoch-carrying indices, and
open_frames choosing the reader from what the path holds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elite_ros_training.data.dataset import PointImageDataset, open_frames
from elite_ros_training.data.frame import ConcatFrames, Frame
from elite_ros_training.data.pipeline import PipelineConfig
from elite_ros_training.data.semantickitti import SequenceFolder, write_bin

LIDAR_ONLY = PipelineConfig(use_image=False)


def _frames(count: int = 3, points: int = 400) -> list[Frame]:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        xyz = rng.uniform(-20, 20, (points, 3)).astype(np.float32)
        intensity = rng.uniform(0, 1, (points, 1)).astype(np.float32)
        labels = rng.choice([10, 40, 50], points).astype(np.uint32)  # car, road, building (raw ids)
        frames.append(Frame(frame_id=f"{i:06d}", points=np.concatenate([xyz, intensity], axis=1), labels=labels))
    return frames


def test_samples_are_reproducible_per_seed_epoch_and_index():
    frames = _frames()
    dataset = PointImageDataset(frames, LIDAR_ONLY, train=True, seed=3)
    again = PointImageDataset(frames, LIDAR_ONLY, train=True, seed=3)
    assert len(dataset) == 3
    first = dataset[1]
    np.testing.assert_array_equal(first.points, again[1].points)  # another instance (worker): same draws
    np.testing.assert_array_equal(first.points, dataset[1].points)  # asking twice: same draws
    assert first.frame_id == "000001" and first.image is None
    other_seed = PointImageDataset(frames, LIDAR_ONLY, train=True, seed=4)[1]
    assert not np.array_equal(first.points, other_seed.points)
    dataset.set_epoch(1)
    next_epoch = dataset[1]
    assert not np.array_equal(first.points, next_epoch.points)  # new augmentation every epoch


def test_an_index_past_the_end_carries_its_epoch():
    dataset = PointImageDataset(_frames(), LIDAR_ONLY, train=True, seed=0)
    epoch_two = dataset[2 * len(dataset) + 1]  # sample 1 of epoch 2, whatever the current epoch
    dataset.set_epoch(2)
    np.testing.assert_array_equal(epoch_two.points, dataset[1].points)
    assert epoch_two.frame_id == "000001"


def test_validation_samples_are_not_augmented():
    frames = _frames(1)
    sample = PointImageDataset(frames, LIDAR_ONLY, train=False)[0]
    np.testing.assert_array_equal(sample.points, frames[0].points[sample.ref_index])
    assert sample.labels.tolist() == [{10: 1, 40: 9, 50: 13}[raw] for raw in frames[0].labels[sample.ref_index]]


def _write_sequence(root: Path, frames: int = 2) -> Path:
    (root / "velodyne").mkdir(parents=True)
    for i in range(frames):
        write_bin(root / "velodyne" / f"{i:06d}.bin", np.zeros((3, 4), np.float32))
    return root


def test_open_frames_picks_the_reader_from_the_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such dataset"):
        open_frames(tmp_path / "missing")
    one = open_frames(_write_sequence(tmp_path / "sequences" / "00"))
    assert isinstance(one, SequenceFolder) and len(one) == 2 and one.load_images
    _write_sequence(tmp_path / "sequences" / "01", frames=3)
    for root in (tmp_path, tmp_path / "sequences"):  # a SemanticKITTI root, or its sequences/ folder
        every = open_frames(root, images=False)
        assert isinstance(every, ConcatFrames) and len(every) == 5
        assert all(not source.load_images for source in every.sources)
