"""SemanticKITTI class tables, checked on the real labelled scan."""
from __future__ import annotations

import numpy as np
import pytest

from elite_ros import labels

SPVNAS_RAW_IDS = {0, 1, 10, 11, 30, 40, 44, 48, 50, 51, 52, 70, 71, 72, 80, 81, 99, 252, 254}  # data README


@pytest.fixture(scope="module")
def label_values(data_dir):
    return np.fromfile(data_dir / "semantickitti/spvnas_000000/000000.label", dtype=np.uint32)


def test_real_scan_has_the_documented_ids_and_instances(label_values):
    semantic, instance = labels.split_label(label_values)
    assert label_values.size == 123_389
    assert set(np.unique(semantic).tolist()) == SPVNAS_RAW_IDS
    assert len(set(np.unique(instance).tolist()) - {0}) == 11


def test_learning_map_round_trip_on_the_real_scan(label_values):
    semantic, _ = labels.split_label(label_values)
    train = labels.to_training_ids(label_values)  # instance bits are ignored
    assert train.dtype == np.uint8 and train.shape == semantic.shape
    np.testing.assert_array_equal(train, labels.to_training_ids(semantic))
    raw_again = labels.to_raw_ids(train)
    # raw -> train -> raw is the identity on ids that are their class's canonical id ...
    canonical = np.isin(semantic, list(labels.LEARNING_MAP_INV.values())) & (train > 0)
    np.testing.assert_array_equal(raw_again[canonical], semantic[canonical])
    # ... and train -> raw -> train is the identity everywhere
    np.testing.assert_array_equal(labels.to_training_ids(raw_again), train)
    # moving classes fold into their static class; 1/52/99 are ignored
    assert labels.to_training_ids(np.array([252, 254, 1, 52, 99])).tolist() == [1, 6, 0, 0, 0]


def test_tables_are_consistent():
    assert len(labels.CLASS_NAMES) == labels.NUM_CLASSES == 20
    assert labels.CLASS_NAMES[0] == "unlabeled" and labels.CLASS_NAMES[19] == "traffic-sign"
    assert set(labels.LEARNING_MAP) == set(labels.RAW_NAMES) == set(labels.RAW_COLORS_BGR)
    for train, raw in labels.LEARNING_MAP_INV.items():
        assert labels.LEARNING_MAP[raw] == train
    assert labels.to_training_ids(np.array([12345])).tolist() == [0]  # unknown raw id -> ignored


def test_palette_is_rgb_of_the_bgr_colour_map():
    pal = labels.palette_rgb()
    assert pal.shape == (20, 3) and pal.dtype == np.uint8
    assert pal[1].tolist() == [100, 150, 245]  # car: BGR (245, 150, 100)
    assert labels.packed_rgb(np.array([1])).tolist() == [(100 << 16) | (150 << 8) | 245]


def test_to_raw_ids_rejects_out_of_range():
    with pytest.raises(ValueError, match="0..19"):
        labels.to_raw_ids(np.array([3, 20]))
