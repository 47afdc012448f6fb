"""SemanticKITTI class tables: raw ids, the 20-class learning map, names and colours.

Facts from the public `semantic-kitti.yaml` (Behley et al., ICCV 2019). A `.label` value is uint32:
``value & 0xFFFF`` is the raw semantic id, ``value >> 16`` the instance id. Training ids are 0..19 with
0 = unlabelled / ignored.
"""
from __future__ import annotations

import numpy as np

NUM_CLASSES = 20  # training ids 0..19, 0 = ignored (semantic-kitti.yaml learning_map)
IGNORE_ID = 0
SEMANTIC_MASK = 0xFFFF  # lower 16 bits of a .label value
INSTANCE_SHIFT = 16  # upper 16 bits hold the instance id

#: raw SemanticKITTI id -> name
RAW_NAMES: dict[int, str] = {
    0: "unlabeled", 1: "outlier", 10: "car", 11: "bicycle", 13: "bus", 15: "motorcycle",
    16: "on-rails", 18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist",
    32: "motorcyclist", 40: "road", 44: "parking", 48: "sidewalk", 49: "other-ground",
    50: "building", 51: "fence", 52: "other-structure", 60: "lane-marking", 70: "vegetation",
    71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign", 99: "other-object",
    252: "moving-car", 253: "moving-bicyclist", 254: "moving-person", 255: "moving-motorcyclist",
    256: "moving-on-rails", 257: "moving-bus", 258: "moving-truck", 259: "moving-other-vehicle",
}

#: raw id -> colour as (B, G, R), exactly as semantic-kitti.yaml's color_map lists it
RAW_COLORS_BGR: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0), 1: (0, 0, 255), 10: (245, 150, 100), 11: (245, 230, 100), 13: (250, 80, 100),
    15: (150, 60, 30), 16: (255, 0, 0), 18: (180, 30, 80), 20: (255, 0, 0), 30: (30, 30, 255),
    31: (200, 40, 255), 32: (90, 30, 150), 40: (255, 0, 255), 44: (255, 150, 255), 48: (75, 0, 75),
    49: (75, 0, 175), 50: (0, 200, 255), 51: (50, 120, 255), 52: (0, 150, 255), 60: (170, 255, 150),
    70: (0, 175, 0), 71: (0, 60, 135), 72: (80, 240, 150), 80: (150, 240, 255), 81: (0, 0, 255),
    99: (255, 255, 50), 252: (245, 150, 100), 253: (200, 40, 255), 254: (30, 30, 255),
    255: (90, 30, 150), 256: (255, 0, 0), 257: (250, 80, 100), 258: (180, 30, 80), 259: (255, 0, 0),
}

#: raw id -> training id (semantic-kitti.yaml learning_map)
LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9,
    44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19,
    99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}

#: training id -> raw id (semantic-kitti.yaml learning_map_inv)
LEARNING_MAP_INV: dict[int, int] = {
    0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44, 11: 48, 12: 49,
    13: 50, 14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81,
}

#: training id -> class name
CLASS_NAMES: tuple[str, ...] = tuple(RAW_NAMES[LEARNING_MAP_INV[i]] for i in range(NUM_CLASSES))

_LUT_SIZE = 1 << 16  # every possible raw semantic id


def _build_lut() -> np.ndarray:
    lut = np.zeros(_LUT_SIZE, dtype=np.uint8)  # unknown raw ids -> 0 (ignored)
    for raw, train in LEARNING_MAP.items():
        lut[raw] = train
    return lut


_TO_TRAINING = _build_lut()
_TO_RAW = np.array([LEARNING_MAP_INV[i] for i in range(NUM_CLASSES)], dtype=np.uint32)


def split_label(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split `.label` uint32 values (N,) into (raw semantic ids uint16 (N,), instance ids uint16 (N,))."""
    values = np.asarray(values, dtype=np.uint32)
    return (values & SEMANTIC_MASK).astype(np.uint16), (values >> INSTANCE_SHIFT).astype(np.uint16)


def to_training_ids(raw: np.ndarray) -> np.ndarray:
    """Raw SemanticKITTI ids or whole `.label` values (N,) -> training ids uint8 (N,) in 0..19.

    The instance bits are dropped; ids not in the learning map become 0 (ignored).
    """
    return _TO_TRAINING[np.asarray(raw).astype(np.uint32) & SEMANTIC_MASK]


def to_raw_ids(train: np.ndarray) -> np.ndarray:
    """Training ids (N,) in 0..19 -> raw SemanticKITTI ids uint32 (N,) (learning_map_inv)."""
    train = np.asarray(train)
    if train.size and (train.min() < 0 or train.max() >= NUM_CLASSES):
        raise ValueError(f"training ids must lie in 0..{NUM_CLASSES - 1}, got {train.min()}..{train.max()}")
    return _TO_RAW[train.astype(np.intp)]


def palette_rgb() -> np.ndarray:
    """(20, 3) uint8 RGB colour per training id (the colour of its learning_map_inv raw id)."""
    return np.array(
        [RAW_COLORS_BGR[LEARNING_MAP_INV[i]][::-1] for i in range(NUM_CLASSES)], dtype=np.uint8
    )


def packed_rgb(train: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Training ids (N,) -> PCL packed colours uint32 (N,) = 0x00RRGGBB (view as float32 for `rgb`)."""
    pal = palette_rgb() if palette is None else np.asarray(palette, dtype=np.uint8)
    rgb = pal.astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return packed[np.asarray(train).astype(np.intp)]
