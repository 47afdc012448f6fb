"""Cross-entropy class weights from label counts (docs/reference.md §6)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from elite_ros.labels import IGNORE_ID

CLASS_WEIGHT_POWER = 1.0 / 3.0  # docs/reference.md §6: w_c = (max f / f_c)^(1/3)


def class_shares(counts: Sequence[int] | np.ndarray | Tensor, name: str = "class counts") -> Tensor:
    """(C,) float64 share f_c = n_c / sum n of each labelled class c != 0 in per-class label counts (C,).

    Class 0's count (unlabelled points) takes no part in the sum, and its share is 0. A labelled class
    with count 0 (never seen) takes the smallest share of the counted classes, i.e. it is treated as the
    rarest class seen, so that everything derived from the shares stays finite. `name` names the counts
    in the errors.
    """
    values = torch.as_tensor(np.asarray(counts), dtype=torch.float64).flatten()
    if values.numel() < 2:
        raise ValueError(f"{name} must cover class {IGNORE_ID} and at least one labelled class,"
                         f" got {values.numel()} value(s)")
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {values.tolist()}")
    labelled = values.clone()
    labelled[IGNORE_ID] = 0.0
    seen = labelled > 0
    if not seen.any():
        raise ValueError(f"{name} hold no labelled point (every class other than {IGNORE_ID} has count 0)")
    shares = labelled / labelled.sum()
    unseen = ~seen
    unseen[IGNORE_ID] = False
    shares[unseen] = shares[seen].min()
    return shares


def class_weights_from_counts(counts: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    """(C,) float32 CE weights from per-class label counts (C,) (points per training id).

    w_c = (max f / f_c)^(1/3) over the labelled classes c != 0, f their `class_shares` (the ratio does not
    depend on the sum, and class 0's count, unlabelled points, takes part in neither the sum nor the max).
    w_0 = 0: class 0 is ignored by every loss (the reference's weight there is inf, never used).
    A labelled class with count 0 (never seen) gets the largest weight of the counted classes, i.e. it
    is treated as the rarest class seen, so the weights stay finite.
    """
    shares = class_shares(counts)
    labelled = torch.arange(shares.numel()) != IGNORE_ID
    weights = torch.zeros_like(shares)
    weights[labelled] = (shares.max() / shares[labelled]).pow(CLASS_WEIGHT_POWER)
    return weights.to(torch.float32)
