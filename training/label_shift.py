"""Label-shift correction: a student trained on one class mix, run on data with another.

The synthetic world's class shares are not a real street's (road 27 % of its points against
SemanticKITTI's 17 %, bicyclist 0.67 % against 0.01 %, ...), and the class-weighted cross-entropy (ref
§6) pushes the predictions further towards the rare classes. When the appearance of each class, p(x|c),
carries over but the priors do not (label shift), Bayes' rule gives the posterior under the target
priors from the trained one (Saerens, Latinne & Decaestecker, Neural Computation 2002; Menon et al.,
"Long-tail learning via logit adjustment", ICLR 2021):

    weighted CE is minimised by        q(c|x) ∝ w_c p_train(c|x)
    and under the target priors        p_target(c|x) ∝ p_train(c|x) pi_target_c / pi_train_c
    so the corrected logits are        logit_c + log(pi_target_c / pi_train_c) - log w_c

with pi the class shares (over the labelled classes) and w the CE weights (`class_weights_from_counts`).
The offsets are one constant per class: `export` folds them into the classifier's output biases, so the
runtime network stays one function. Lovász-softmax (ref §6), the other term of the loss, has no such
closed form; the correction ignores it. Measured against the real scans in docs/reference.md §13.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from elite_ros.fusion import FusionStudent
from elite_ros.labels import IGNORE_ID
from elite_ros.student import Student
from elite_ros_training.ppmskd import class_shares, class_weights_from_counts


def label_shift_offsets(train_counts: Sequence[int] | np.ndarray,
                        target_counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """(C,) float64 logit offsets log(pi_target / pi_train) - log w (natural log), 0 for class 0.

    train_counts: points per training id in the training frames, whose shares gave the CE weights w;
    target_counts: points per training id in the data the model will run on (only the ratios matter).
    pi are their `class_shares` (a class with count 0 takes the smallest share, so offsets stay finite).
    """
    train, target = np.asarray(train_counts).reshape(-1), np.asarray(target_counts).reshape(-1)
    if train.shape != target.shape:
        raise ValueError(f"train and target class counts differ in length: {train.shape[0]} and {target.shape[0]}")
    target_shares = class_shares(target, "target class counts").numpy()
    train_shares = class_shares(train, "training class counts").numpy()
    weights = class_weights_from_counts(train).numpy().astype(np.float64)
    labelled = np.arange(train.shape[0]) != IGNORE_ID
    offsets = np.zeros(train.shape[0], dtype=np.float64)
    offsets[labelled] = (np.log(target_shares[labelled]) - np.log(train_shares[labelled])
                         - np.log(weights[labelled]))
    return offsets


def output_layer(student: Student | FusionStudent) -> nn.Linear:
    """The Linear that produces the student's logits (the fusion student decodes with its 3D branch's)."""
    lidar = student.lidar if isinstance(student, FusionStudent) else student
    layer = lidar.classifier[-1]
    if not isinstance(layer, nn.Linear) or layer.bias is None:
        raise TypeError(f"the student's last classifier layer is not a Linear with a bias: {layer}")
    return layer


@torch.no_grad()
def add_logit_offsets(student: Student | FusionStudent, offsets: np.ndarray) -> None:
    """Add (C,) `offsets` to the student's output biases, in place (every logit shifts by its class's)."""
    bias = output_layer(student).bias
    if offsets.shape != tuple(bias.shape):
        raise ValueError(f"{offsets.shape[0]} logit offsets for a classifier of {bias.shape[0]} classes")
    bias += torch.as_tensor(offsets, dtype=bias.dtype, device=bias.device)
