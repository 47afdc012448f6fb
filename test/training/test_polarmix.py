"""training/data/polarmix.py: the sector swap and the rotate-paste on hand-placed points, the camera link
of a mixed frame through the pipeline, and the dataset's mixing stream."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from tiny_data import TinyFrames, tiny_frame

from elite_ros.labels import to_raw_ids, to_training_ids
from elite_ros_training.config import load_config, named_config
from elite_ros_training.data.dataset import PointImageDataset
from elite_ros_training.data.frame import Frame
from elite_ros_training.data.pipeline import PipelineConfig, build_sample
from elite_ros_training.data.polarmix import (
    COPY_ROTATION_RANGES_RAD,
    PolarMixConfig,
    in_sector,
    polar_mix,
    rotated_about_z,
)

CAR, ROAD, BUILDING = 1, 9, 13  # training ids


def _ring(azimuths_deg: list[float], ids: list[int], radius: float = 10.0, name: str = "a") -> Frame:
    """Points at `radius` metres and the given azimuths, z = -1 m, intensity 0.5, of the given classes."""
    angles = np.radians(azimuths_deg)
    points = np.column_stack([radius * np.cos(angles), radius * np.sin(angles), np.full(len(angles), -1.0),
                              np.full(len(angles), 0.5)]).astype(np.float32)
    return Frame(frame_id=name, points=points, labels=to_raw_ids(np.array(ids)).astype(np.uint32))


def test_in_sector_wraps_around_the_back():
    xyz = np.array([[1, 0, 0], [0, 1, 0], [-1, 0.01, 0], [-1, -0.01, 0], [0, -1, 0]], np.float32)
    # the sector from 170 deg, 40 deg wide, covers the back (170 .. 210 deg = -150 deg)
    np.testing.assert_array_equal(in_sector(xyz, math.radians(170), math.radians(40)),
                                  [False, False, True, True, False])
    np.testing.assert_array_equal(in_sector(xyz, 0.0, 0.0), [False] * 5)


def test_rotated_about_z_keeps_range_height_and_intensity():
    points = np.array([[3.0, 4.0, -1.5, 0.7]], np.float32)
    turned = rotated_about_z(points, math.pi / 2)
    np.testing.assert_allclose(turned, [[-4.0, 3.0, -1.5, 0.7]], atol=1e-6)
    assert points[0, 0] == 3.0  # the input is not changed


def test_polar_mix_swaps_the_sector_and_pastes_the_partners_objects():
    frame = _ring([10, 100, 190, 280], [ROAD, ROAD, BUILDING, BUILDING], name="a")
    partner = _ring([20, 110, 200, 290], [CAR, ROAD, ROAD, ROAD], radius=20.0, name="b")
    config = PolarMixConfig(probability=1.0)
    mixed = polar_mix(frame, partner, np.random.default_rng(7), config)

    rng = np.random.default_rng(7)  # the same draws, by hand
    start = rng.uniform(-math.pi, math.pi)
    angles = [rng.uniform(low, high) for low, high in COPY_ROTATION_RANGES_RAD]
    kept = ~in_sector(frame.points, start, math.pi)
    taken = in_sector(partner.points, start, math.pi)
    assert 0 < kept.sum() < 4 and 0 < taken.sum() < 4  # half a turn holds two of each ring's four points
    expected = np.concatenate([frame.points[kept], partner.points[taken]]
                              + [rotated_about_z(partner.points[:1], a) for a in angles])
    np.testing.assert_allclose(mixed.points, expected, atol=1e-6)
    expected_ids = np.concatenate([to_training_ids(frame.labels)[kept], to_training_ids(partner.labels)[taken],
                                   [CAR, CAR]])
    np.testing.assert_array_equal(to_training_ids(mixed.labels), expected_ids)
    # only the frame's own points keep the camera; every point keeps its range and height
    np.testing.assert_array_equal(mixed.camera_mask, np.arange(len(mixed.points)) < kept.sum())
    ranges = np.hypot(mixed.points[:, 0], mixed.points[:, 1])
    np.testing.assert_allclose(np.sort(ranges), [10.0] * kept.sum() + [20.0] * (taken.sum() + 2), atol=1e-4)
    assert mixed.frame_id == "a+b" and mixed.points.dtype == np.float32


def test_polar_mix_without_labels_or_objects():
    frame = _ring([10, 190], [ROAD, BUILDING])
    unlabelled = Frame(frame_id="u", points=frame.points)
    assert polar_mix(frame, unlabelled, np.random.default_rng(0), PolarMixConfig(1.0)) is frame
    assert polar_mix(unlabelled, frame, np.random.default_rng(0), PolarMixConfig(1.0)) is unlabelled
    no_paste = polar_mix(frame, _ring([20, 200], [CAR, CAR], name="b"), np.random.default_rng(0),
                         PolarMixConfig(1.0, paste_classes=()))
    assert len(no_paste.points) == 2  # one point of each ring in each half: swapped, nothing pasted


def test_config_refuses_bad_values_naming_them():
    with pytest.raises(ValueError, match="probability"):
        PolarMixConfig(probability=1.5)
    with pytest.raises(ValueError, match="sector_width"):
        PolarMixConfig(sector_width=-1.0)
    with pytest.raises(KeyError, match="lorry"):
        PolarMixConfig(paste_classes=("car", "lorry"))
    with pytest.raises(ValueError, match="camera_mask"):
        Frame(frame_id="x", points=np.zeros((3, 4), np.float32), camera_mask=np.ones(2, bool))


def test_the_partners_points_get_no_pixel_in_the_pipeline():
    frame, partner = tiny_frame(0, count=600), tiny_frame(1, count=600)
    mixed = polar_mix(frame, partner, np.random.default_rng(3), PolarMixConfig(1.0))
    sample = build_sample(mixed, PipelineConfig(), np.random.default_rng(0), train=True)
    scan_index = sample.ref_index[sample.point_to_pixel]
    assert len(scan_index) > 0 and mixed.camera_mask[scan_index].all()
    # the same frame without the mask would have linked partner points that fall into the image
    unmasked = dataclasses.replace(mixed, camera_mask=None)
    linked = build_sample(unmasked, PipelineConfig(), np.random.default_rng(0), train=True)
    assert (~mixed.camera_mask[linked.ref_index[linked.point_to_pixel]]).any()


def test_the_dataset_mixes_on_its_own_stream():
    frames = TinyFrames(4, points=500, camera=False)
    lidar_only = PipelineConfig(use_image=False)
    plain = PointImageDataset(frames, lidar_only, train=True, seed=5)
    never = PointImageDataset(frames, PipelineConfig(use_image=False, polar_mix=PolarMixConfig(0.0)), seed=5)
    always_config = PipelineConfig(use_image=False, polar_mix=PolarMixConfig(1.0))
    always = PointImageDataset(frames, always_config, train=True, seed=5)
    np.testing.assert_array_equal(plain[2].points, never[2].points)
    mixed = always[2]
    assert "+" in mixed.frame_id and not mixed.frame_id.startswith("+")
    assert mixed.frame_id.split("+")[1] != mixed.frame_id.split("+")[0]  # a partner other than itself
    np.testing.assert_array_equal(mixed.points, PointImageDataset(frames, always_config, seed=5)[2].points)
    # validation never mixes
    assert "+" not in PointImageDataset(frames, always_config, train=False)[2].frame_id


def test_a_config_switches_it_on():
    config = load_config(named_config("cpu_synthetic_row_a"), ["data.pipeline.polar_mix.probability=0.5"])
    assert config.data.pipeline.polar_mix == PolarMixConfig(probability=0.5)
