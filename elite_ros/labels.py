"""SemanticKITTI class tables: raw ids, the 20-class learning map, names and colours.

Facts from the public `semantic-kitti.yaml` (Behley et al., ICCV 2019). A `.label` value is uint32:
``value & 0xFFFF`` is the raw semantic id, ``value >> 16`` the instance id. Training ids are 0..19 with
0 = unlabelled / ignored.

These are the defaults. A model's own classes are a `ClassTable` (names, palette, learning map and its
inverse), which a checkpoint may bring (`elite_ros.checkpoint.CheckpointMetadata.classes`); the
module-level functions below are `SEMANTIC_KITTI`'s.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

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
MAX_CLASSES = 256  # the `class_id` output field is UINT8


def class_table_problems(names: Sequence[str], palette: Sequence[Sequence[int]] | np.ndarray,
                         learning_map: Mapping[int, int], learning_map_inv: Mapping[int, int]) -> list[str]:
    """Why these tables cannot describe one model's classes (empty list: they can).

    The rules: at least the ignore class (training id IGNORE_ID) and one more, at most MAX_CLASSES; names
    unique and non-empty; one RGB colour 0..255 per name; learning-map keys are raw ids 0..0xFFFF and its
    values training ids of these classes; the inverse names one raw id per class (the ignore class
    included) that the learning map takes back to that class.
    """
    problems = []
    count = len(names)
    if not 2 <= count <= MAX_CLASSES:
        problems.append(f"class_names must hold 2..{MAX_CLASSES} classes (class {IGNORE_ID} is the ignored one), "
                        f"got {count}")
    empty = [i for i, name in enumerate(names) if not isinstance(name, str) or not name.strip()]
    if empty:
        problems.append(f"class_names must be non-empty: id(s) {empty[:5]} are blank")
    duplicates = sorted({name for name in names if list(names).count(name) > 1})
    if duplicates:
        problems.append(f"class_names must be unique: {duplicates[:5]} appear more than once")
    colours = np.asarray(palette)
    if colours.ndim != 2 or colours.shape[1:] != (3,) or colours.shape[0] != count:
        problems.append(f"palette must hold one [r, g, b] per class name ({count}), got shape {list(colours.shape)}")
    elif colours.size and (colours.min() < 0 or colours.max() > 255):
        problems.append("palette values must lie in 0..255")
    bad_raw = sorted(raw for raw in learning_map if not 0 <= raw < _LUT_SIZE)
    if bad_raw:
        problems.append(f"learning_map keys must be raw ids 0..{_LUT_SIZE - 1}, got {bad_raw[:5]}")
    outside = sorted(raw for raw, train in learning_map.items() if not 0 <= train < count)
    if outside:
        problems.append(f"learning_map maps raw id(s) {outside[:5]} to training id(s) "
                        f"{[learning_map[r] for r in outside[:5]]} outside the classes 0..{count - 1}")
    if IGNORE_ID not in learning_map.values():
        problems.append(f"learning_map maps no raw id to the ignore class {IGNORE_ID}")
    missing = [c for c in range(count) if c not in learning_map_inv]
    if missing:
        problems.append(f"learning_map_inv lacks training id(s) {missing[:5]} (no raw id maps to them)")
    unknown = sorted(c for c in learning_map_inv if not 0 <= c < count)
    if unknown:
        problems.append(f"learning_map_inv has training id(s) {unknown[:5]} outside the classes 0..{count - 1}")
    wrong = [c for c, raw in sorted(learning_map_inv.items()) if 0 <= c < count and learning_map.get(raw) != c]
    if wrong:
        problems.append("learning_map_inv does not invert learning_map at training id(s) "
                        + ", ".join(f"{c} (raw {learning_map_inv[c]} -> {learning_map.get(learning_map_inv[c])})"
                                    for c in wrong[:5]))
    return problems


def invert_learning_map(learning_map: Mapping[int, int]) -> dict[int, int]:
    """Training id -> raw id: SemanticKITTI's learning_map_inv for its own map, else the smallest raw id
    that maps to each training id (a checkpoint that wants another writes `learning_map_inv`)."""
    if dict(learning_map) == LEARNING_MAP:
        return dict(LEARNING_MAP_INV)
    inverse: dict[int, int] = {}
    for raw, train in sorted(learning_map.items()):
        inverse.setdefault(train, raw)
    return dict(sorted(inverse.items()))


@dataclass(frozen=True, eq=False)
class ClassTable:
    """One model's classes: what its training ids are called, look like and stand for in raw labels.

    names: (C,) class name per training id; id IGNORE_ID (0) is the ignored / unlabelled class.
    palette: (C, 3) uint8 RGB per training id. learning_map: raw label id (0..0xFFFF) -> training id.
    learning_map_inv: training id -> the raw id written for it (the `label` output, PCL PointXYZL).
    Construction checks `class_table_problems` and raises ValueError listing them.
    """

    names: tuple[str, ...]
    palette: np.ndarray
    learning_map: Mapping[int, int]
    learning_map_inv: Mapping[int, int]
    _to_training: np.ndarray = field(init=False, repr=False)  # (65536,) uint8 raw id -> training id
    _to_raw: np.ndarray = field(init=False, repr=False)  # (C,) uint32 training id -> raw id

    def __post_init__(self) -> None:
        problems = class_table_problems(self.names, self.palette, self.learning_map, self.learning_map_inv)
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "palette", np.asarray(self.palette, dtype=np.uint8))
        lut = np.zeros(_LUT_SIZE, dtype=np.uint8)  # unknown raw ids -> 0 (ignored)
        for raw, train in self.learning_map.items():
            lut[raw] = train
        object.__setattr__(self, "_to_training", lut)
        object.__setattr__(self, "_to_raw", np.array([self.learning_map_inv[c] for c in range(len(self.names))],
                                                     dtype=np.uint32))

    @classmethod
    def build(cls, names: Iterable[str], palette: Sequence[Sequence[int]] | np.ndarray,
              learning_map: Mapping[int, int], learning_map_inv: Mapping[int, int] | None = None) -> ClassTable:
        """A table whose inverse defaults to `invert_learning_map(learning_map)`."""
        inverse = invert_learning_map(learning_map) if learning_map_inv is None else learning_map_inv
        return cls(tuple(names), np.asarray(palette), dict(learning_map), dict(inverse))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_training_ids(self, raw: np.ndarray) -> np.ndarray:
        """Raw ids or whole `.label` values (N,) -> training ids uint8 (N,); the instance bits are dropped and
        raw ids not in the learning map become IGNORE_ID."""
        return self._to_training[np.asarray(raw).astype(np.uint32) & SEMANTIC_MASK]

    def to_raw_ids(self, train: np.ndarray) -> np.ndarray:
        """Training ids (N,) in 0..C-1 -> raw ids uint32 (N,) (`learning_map_inv`)."""
        train = np.asarray(train)
        if train.size and (train.min() < 0 or train.max() >= self.num_classes):
            raise ValueError(f"training ids must lie in 0..{self.num_classes - 1}, got {train.min()}..{train.max()}")
        return self._to_raw[train.astype(np.intp)]

    def ids_of(self, names: Iterable[str]) -> np.ndarray:
        """(K,) uint8 training ids of class `names`; KeyError naming the unknown ones and the known classes."""
        wanted = list(names)
        unknown = [name for name in wanted if name not in self.names]
        if unknown:
            raise KeyError(f"unknown class name(s) {unknown}; this model's classes: {', '.join(self.names)}")
        return np.array([self.names.index(name) for name in wanted], dtype=np.uint8)


def palette_rgb() -> np.ndarray:
    """(20, 3) uint8 RGB colour per training id (the colour of its learning_map_inv raw id)."""
    return np.array(
        [RAW_COLORS_BGR[LEARNING_MAP_INV[i]][::-1] for i in range(NUM_CLASSES)], dtype=np.uint8
    )


#: the SemanticKITTI classes: the default of every model and of every tool that is given none
SEMANTIC_KITTI = ClassTable(CLASS_NAMES, palette_rgb(), LEARNING_MAP, LEARNING_MAP_INV)


def split_label(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split `.label` uint32 values (N,) into (raw semantic ids uint16 (N,), instance ids uint16 (N,))."""
    values = np.asarray(values, dtype=np.uint32)
    return (values & SEMANTIC_MASK).astype(np.uint16), (values >> INSTANCE_SHIFT).astype(np.uint16)


def to_training_ids(raw: np.ndarray) -> np.ndarray:
    """Raw SemanticKITTI ids or whole `.label` values (N,) -> training ids uint8 (N,) in 0..19.

    The instance bits are dropped; ids not in the learning map become 0 (ignored).
    """
    return SEMANTIC_KITTI.to_training_ids(raw)


def to_raw_ids(train: np.ndarray) -> np.ndarray:
    """Training ids (N,) in 0..19 -> raw SemanticKITTI ids uint32 (N,) (learning_map_inv)."""
    return SEMANTIC_KITTI.to_raw_ids(train)


def packed_rgb(train: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Training ids (N,) -> PCL packed colours uint32 (N,) = 0x00RRGGBB (view as float32 for `rgb`)."""
    pal = palette_rgb() if palette is None else np.asarray(palette, dtype=np.uint8)
    rgb = pal.astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return packed[np.asarray(train).astype(np.intp)]
