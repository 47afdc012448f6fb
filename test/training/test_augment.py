"""The reference's augmentation steps, one by one (docs/reference.md §2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from elite_ros_training.data import augment
from elite_ros_training.data.augment import AugmentConfig, CropWindow, RigidAugmentation


def test_volume_filter_is_strict() -> None:
    xyz = np.array([[0, 0, 0], [50, 0, 0], [49.99, -49.99, -3.99], [0, 0, 2], [0, 0, -4], [np.nan, 0, 0]], np.float32)
    np.testing.assert_array_equal(augment.in_volume(xyz), [True, False, True, False, False, False])


def test_dropout_removes_a_ratio_below_20_percent() -> None:
    ratios = []
    for seed in range(200):
        keep = augment.dropout_keep_mask(np.random.default_rng(seed), 10_000)
        ratios.append(1 - keep.mean())
    ratios = np.array(ratios)
    assert ratios.min() >= 0 and ratios.max() < 0.21
    assert 0.08 < ratios.mean() < 0.12  # r ~ U[0, 0.2): mean 0.1


def test_rigid_augmentation_is_rotation_then_flip_then_scale_then_translation() -> None:
    rng = np.random.default_rng(7)
    xyz = rng.normal(size=(100, 3)) * 10
    rigid = augment.sample_rigid_augmentation(rng)
    c, s = np.cos(rigid.angle), np.sin(rigid.angle)
    step = np.stack([c * xyz[:, 0] - s * xyz[:, 1], s * xyz[:, 0] + c * xyz[:, 1], xyz[:, 2]], axis=1)
    step = step * rigid.flip
    step = step * rigid.scale
    step = step + rigid.translation
    np.testing.assert_allclose(rigid.apply(xyz), step, rtol=1e-6, atol=1e-5)
    assert rigid.scale[2] == 1 and rigid.scale[0] == rigid.scale[1]
    assert tuple(rigid.flip) in augment.FLIPS


def test_augmentation_draw_ranges() -> None:
    draws = [augment.sample_rigid_augmentation(np.random.default_rng(seed)) for seed in range(400)]
    angles = np.array([d.angle for d in draws])
    scales = np.array([d.scale[0] for d in draws])
    translations = np.stack([d.translation for d in draws])
    assert angles.min() >= 0 and angles.max() < 2 * np.pi and np.ptp(angles) > 5
    assert scales.min() >= 0.95 and scales.max() <= 1.05
    assert 0.08 < translations.std() < 0.12
    assert {tuple(d.flip) for d in draws} == set(augment.FLIPS)
    off = augment.sample_rigid_augmentation(np.random.default_rng(0), AugmentConfig(False, False, None, 0.0))
    np.testing.assert_array_equal(off.linear, np.eye(3))
    np.testing.assert_array_equal(off.translation, 0)


def test_remap_after_filter() -> None:
    keep = np.array([True, False, True, True, False, True])
    index = np.array([5, 1, 0, 3, 4])
    survived, new = augment.remap_after_filter(keep, index)
    np.testing.assert_array_equal(survived, [True, False, True, True, False])
    np.testing.assert_array_equal(new, [3, 0, 2])  # old 5 -> 3, old 0 -> 0, old 3 -> 2


def test_crop_window_and_flip() -> None:
    window = CropWindow(top=50, left=100, height=320, width=1024)
    pixels = np.array([[50, 100], [369, 1123], [49, 500], [200, 1124], [200, 99]])
    np.testing.assert_array_equal(window.contains(pixels), [True, True, False, False, False])
    np.testing.assert_array_equal(window.to_window(pixels[:2]), [[0, 0], [319, 1023]])
    flipped = CropWindow(50, 100, 320, 1024, flipped=True)
    np.testing.assert_array_equal(flipped.to_window(pixels[:2]), [[0, 1023], [319, 0]])
    image = np.arange(370 * 1200).reshape(370, 1200)
    cut = flipped.cut(image)
    assert cut.shape == (320, 1024)
    assert cut[0, 1023] == image[50, 100] and cut[319, 0] == image[369, 1123]


def test_bottom_crop_window() -> None:
    lefts = {augment.bottom_crop_window(1241, 376, rng=np.random.default_rng(s)).left for s in range(500)}
    assert min(lefts) >= 0 and max(lefts) <= 1241 - 1024 and len(lefts) > 100
    window = augment.bottom_crop_window(1241, 376)
    assert (window.top, window.left, window.height, window.width) == (56, 108, 320, 1024)
    with pytest.raises(ValueError, match="smaller than the crop"):
        augment.bottom_crop_window(1000, 376)


def test_color_jitter_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 32, 64), dtype=np.uint8))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = augment.color_jitter(image, seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert torch.equal(a, augment.color_jitter(image, seed=5))
    assert not torch.equal(a, augment.color_jitter(image, seed=6))
    assert a.dtype == torch.uint8 and a.shape == image.shape


def test_sam_normalisation() -> None:
    image = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    out = augment.normalize_image(image)
    expected = (255 - np.array(augment.SAM_PIXEL_MEAN)) / np.array(augment.SAM_PIXEL_STD)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), expected, rtol=1e-6)
    assert out.dtype == torch.float32


def test_identity() -> None:
    xyz = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(RigidAugmentation.identity().apply(xyz), xyz)
