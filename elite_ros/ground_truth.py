"""Ground truth in a PointCloud2: which field holds it, and its values as training ids.

A labelled cloud carries raw ids (`label`, `gt_label`: `.label` values, instance bits included) or
training ids (any other field, e.g. `gt_class_id`). Raw ids become training ids through the model's
learning map (a `labels.ClassTable`: the checkpoint's; SemanticKITTI's by default). `class_id` is this
package's own output and is never taken as ground truth unless named.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from elite_ros.labels import SEMANTIC_KITTI, ClassTable


def ground_truth_ids(values: np.ndarray, kind: str, classes: ClassTable = SEMANTIC_KITTI) -> np.ndarray:
    """Ground-truth field values (N,) -> training ids uint8 (N,) of `classes`.

    kind: "raw" (`.label` values / raw ids; instance bits dropped, `classes`' learning map applied) or
    "train" (already training ids 0..C-1).
    """
    if kind == "raw":
        return classes.to_training_ids(values)
    if kind == "train":
        values = np.asarray(values)
        if values.size and (values.min() < 0 or values.max() >= classes.num_classes):
            raise ValueError(f"training-id ground truth must lie in 0..{classes.num_classes - 1}, "
                             f"got {values.min()}..{values.max()}")
        return values.astype(np.uint8)
    raise ValueError(f"unknown ground-truth kind {kind!r} (raw | train)")


#: field names holding raw ids (`.label` values); any other label field holds training ids
RAW_ID_FIELDS = ("label", "gt_label")


def ground_truth_kind(field: str) -> str:
    """"raw" for a field of raw ids (`label`, `gt_label`), else "train" (training ids)."""
    return "raw" if field in RAW_ID_FIELDS else "train"


#: ground-truth fields looked for, in order, when none is named: (field, kind). Not `class_id`: that is this
#: package's own output (a segmented bag would be scored against its own predictions); name it with
#: `--gt-field class_id` when a cloud really carries training-id ground truth under that name.
GROUND_TRUTH_FIELDS = tuple((name, ground_truth_kind(name)) for name in ("label", "gt_label", "gt_class_id"))


def find_ground_truth_field(field_names: Iterable[str], exclude: Iterable[str] = ()) -> tuple[str, str] | None:
    """(field, kind) of the first known ground-truth field among `field_names`, skipping `exclude`."""
    names, skip = set(field_names), set(exclude)
    for name, kind in GROUND_TRUTH_FIELDS:
        if name in names and name not in skip:
            return name, kind
    return None


class CloudGroundTruth:
    """Callable: PointCloud2 -> (num_points,) uint8 training ids from its ground-truth field, or None.

    field: the field to read (None: the first of GROUND_TRUTH_FIELDS present, except `exclude`).
    kind: "raw" (raw ids / .label values), "train" (training ids) or "auto" (from the name:
    `label`/`gt_label` raw, otherwise training ids). classes: the model's classes (set `classes` once the
    model is loaded); raw ids go through its learning map.
    """

    def __init__(self, field: str | None = None, kind: str = "auto", exclude: Iterable[str] = (),
                 classes: ClassTable = SEMANTIC_KITTI) -> None:
        if kind not in ("auto", "raw", "train"):
            raise ValueError(f"ground-truth kind must be auto, raw or train, got {kind!r}")
        self.field, self.kind, self.exclude, self.classes = field, kind, tuple(exclude), classes
        self.found: str | None = None  # the field actually used (after the first labelled cloud)

    def __call__(self, msg: Any) -> np.ndarray | None:
        from elite_ros.cloud import read_points

        names = [f.name for f in msg.fields]
        if self.field is not None:
            if self.field not in names:
                raise ValueError(f"ground-truth field {self.field!r} not in the cloud (fields: {', '.join(names)})")
            name, kind = self.field, self.kind
            if kind == "auto":
                kind = ground_truth_kind(name)
        else:
            found = find_ground_truth_field(names, self.exclude)
            if found is None:
                return None
            name, kind = found if self.kind == "auto" else (found[0], self.kind)
        self.found = name
        return ground_truth_ids(read_points(msg)[name], kind, self.classes)
