"""A student with classes of its own (5, not SemanticKITTI's 20): names, palette, learning map and inverse.

The raw ids mean nothing in SemanticKITTI (e.g. 100 would be unknown there, 40 is road but here it is
not mapped at all), so any place that still used SemanticKITTI's tables would give visibly wrong labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

NAMES = ["void", "ground", "wall", "plant", "vehicle"]
PALETTE = [[0, 0, 0], [128, 64, 128], [200, 200, 0], [0, 160, 0], [0, 0, 230]]
#: raw id -> training id; two raw ids for most classes
LEARNING_MAP = {"0": 0, "3": 0, "100": 1, "101": 1, "200": 2, "300": 3, "400": 4, "401": 4}
#: written explicitly and on purpose not the smallest raw id of each class (101, 401)
LEARNING_MAP_INV = {"0": 0, "1": 101, "2": 200, "3": 300, "4": 401}
RAW_OF = {int(k): v for k, v in LEARNING_MAP_INV.items()}  # training id -> raw id, as ints
INTENSITY_SCALE = 0.5  # what this pretend training multiplied reflectance by
BN_VARIANCE = 0.05  # running variances in [BN_VARIANCE / 2, BN_VARIANCE]: features vary enough to change class


def save_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny untrained 5-class student (8 channels) with its own class tables, saved to `path`."""
    import torch

    from elite_ros.checkpoint import make_metadata
    from elite_ros.checkpoint import save_checkpoint as save
    from elite_ros.student import Student, StudentConfig

    torch.manual_seed(seed)
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8, num_classes=len(NAMES)))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # untrained, but with BN statistics and no class bias that make labels vary per point
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(BN_VARIANCE / 2, BN_VARIANCE, generator=generator)
        model.classifier[2].bias.zero_()
    metadata = make_metadata(model, trained=False, class_names=list(NAMES), palette=[list(c) for c in PALETTE],
                             learning_map=dict(LEARNING_MAP), learning_map_inv=dict(LEARNING_MAP_INV),
                             intensity_scale=INTENSITY_SCALE)
    return save(path, model, metadata)


def raw_labels(train_ids: np.ndarray) -> np.ndarray:
    """Training ids (N,) -> raw ids uint32 (N,) of this table (what a labelled cloud would carry)."""
    return np.array([RAW_OF[int(c)] for c in train_ids], dtype=np.uint32)
