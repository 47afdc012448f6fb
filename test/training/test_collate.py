"""Collating samples into a typed batch for the student and the teacher."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from elite_ros_training.data.augment import CropWindow, RigidAugmentation
from elite_ros_training.data.collate import collate
from elite_ros_training.data.pipeline import Sample


def _sample(rng: np.random.Generator, n: int, ni: int, *, image: bool = True, pseudo: bool = True,
            name: str = "f") -> Sample:
    labels = rng.integers(0, 20, n)
    point_to_pixel = np.sort(rng.choice(n, ni, replace=False))
    return Sample(
        frame_id=name, points=rng.normal(size=(n, 4)).astype(np.float32), labels=labels,
        ref_index=np.arange(n) * 2, num_scan_points=2 * n, augmentation=RigidAugmentation.identity(),
        image=rng.normal(size=(3, 8, 16)).astype(np.float32) if image else None,
        pixels=np.stack([rng.integers(0, 8, ni), rng.integers(0, 16, ni)], axis=1),
        point_to_pixel=point_to_pixel, pixel_labels=labels[point_to_pixel],
        pseudo_labels=rng.integers(0, 20, (8, 16)) if pseudo else None,
        crop=CropWindow(0, 0, 8, 16) if image else None,
    )


def test_batch_layout() -> None:
    rng = np.random.default_rng(0)
    samples = [_sample(rng, 30, 5, name="a"), _sample(rng, 12, 7, name="b")]
    batch = collate(samples, teacher_input_size=32)
    assert batch.batch_size == 2 and batch.frame_ids == ["a", "b"]
    assert batch.points.shape == (42, 4) and batch.points.dtype == torch.float32
    assert torch.equal(batch.batch_index, torch.tensor([0] * 30 + [1] * 12))
    assert torch.equal(batch.point_offsets, torch.tensor([0, 30, 42]))
    assert torch.equal(batch.labels, torch.from_numpy(np.concatenate([s.labels for s in samples])))
    assert torch.equal(batch.num_scan_points, torch.tensor([60, 24]))
    # teacher: padded images, per-sample pixels, global point indices that find the right labels
    assert batch.images.shape == (2, 3, 32, 32) and batch.image_size == (8, 16)
    assert torch.equal(batch.images[1, :, :8, :16], torch.from_numpy(samples[1].image))
    assert batch.images[:, :, 8:].abs().sum() == 0 and batch.images[:, :, :, 16:].abs().sum() == 0
    assert [len(p) for p in batch.pixels] == [5, 7]
    assert torch.equal(batch.labels[batch.point_to_pixel_global()], batch.pixel_labels)
    assert batch.pseudo_labels.shape == (2, 8, 16)
    moved = batch.to("cpu")
    assert torch.equal(moved.points, batch.points) and moved.frame_ids == batch.frame_ids


def test_crop_size_kept_without_teacher_padding_and_missing_pseudo_labels() -> None:
    rng = np.random.default_rng(1)
    batch = collate([_sample(rng, 10, 3), _sample(rng, 10, 3, pseudo=False)], teacher_input_size=None)
    assert batch.images.shape == (2, 3, 8, 16)
    assert batch.pseudo_labels is None


def test_lidar_only_batches_and_bad_mixes() -> None:
    rng = np.random.default_rng(2)
    lidar = collate([_sample(rng, 10, 0, image=False, pseudo=False), _sample(rng, 5, 0, image=False, pseudo=False)])
    assert lidar.images is None and lidar.pixel_labels.numel() == 0 and lidar.points.shape == (15, 4)
    with pytest.raises(ValueError, match=r"with and without images \(no image: \['x'\]\)"):
        collate([_sample(rng, 10, 3), _sample(rng, 10, 0, image=False, name="x")])
    with pytest.raises(ValueError, match="larger than the teacher input"):
        collate([_sample(rng, 10, 3)], teacher_input_size=8)
    with pytest.raises(ValueError, match="at least one sample"):
        collate([])
