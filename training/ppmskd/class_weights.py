"""Cross-entropy class weights from label counts (docs/reference.md §6)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from elite_ros.labels import IGNORE_ID

CLASS_WEIGHT_POWER = 1.0 / 3.0  # docs/reference.md §6: w_c = (max f / f_c)^(1/3)


def class_weights_from_counts(counts: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    """(C,) float32 CE weights from per-class label counts (C,) (points per training id).

    f_c = n_c / sum n and w_c = (max f / f_c)^(1/3) over the labelled classes c != 0 (the ratio does not
    depend on the sum, and class 0's count, unlabelled points, takes part in neither the sum nor the max).
    w_0 = 0: class 0 is ignored by every loss (the reference's weight there is inf, never used).
    A labelled class with count 0 (never seen) gets the largest weight of the counted classes, i.e. it
    is treated as the rarest class seen, so the weights stay finite.
    """
    values = torch.as_tensor(np.asarray(counts), dtype=torch.float64).flatten()
    if values.numel() < 2:
        raise ValueError(f"class counts must cover class {IGNORE_ID} and at least one labelled class,"
                         f" got {values.numel()} value(s)")
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"class counts must be finite and >= 0, got {values.tolist()}")
    labelled = values.clone()
    labelled[IGNORE_ID] = 0.0
    seen = labelled > 0
    if not seen.any():
        raise ValueError("class counts hold no labelled point (every class other than 0 has count 0)")
    frequency = labelled / labelled.sum()
    weights = torch.zeros_like(values)
    weights[seen] = (frequency.max() / frequency[seen]).pow(CLASS_WEIGHT_POWER)
    unseen = ~seen
    unseen[IGNORE_ID] = False
    weights[unseen] = weights[seen].max()
    return weights.to(torch.float32)
