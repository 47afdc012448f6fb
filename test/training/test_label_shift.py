"""training/label_shift.py: the label-shift logit offsets and their folding into the student's biases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from elite_ros.fusion import FusionConfig, FusionStudent
from elite_ros.student import Student, StudentConfig
from elite_ros_training.label_shift import add_logit_offsets, label_shift_offsets, output_layer
from elite_ros_training.ppmskd import class_weights_from_counts


def test_offsets_on_a_hand_computed_case():
    # training shares 1/4, 3/4 -> weights 3^(1/3), 1; target shares 1/2, 1/2
    offsets = label_shift_offsets([7, 1, 3], [5, 1, 1])
    assert offsets[0] == 0.0  # the ignored class is never shifted
    assert offsets[1] == pytest.approx(math.log(0.5 / 0.25) - math.log(3.0) / 3.0)
    assert offsets[2] == pytest.approx(math.log(0.5 / 0.75))


def test_the_same_class_mix_only_undoes_the_class_weights():
    counts = np.array([0, 100, 10, 1, 50])
    weights = class_weights_from_counts(counts).numpy()
    assert np.allclose(label_shift_offsets(counts, 3 * counts)[1:], -np.log(weights[1:]))


def test_the_offsets_turn_the_weighted_ce_optimum_into_the_target_posterior():
    """Bayes on a discrete world: 6 appearances x, 4 classes (0 ignored), p(x|c) shared by both domains."""
    rng = np.random.default_rng(0)
    likelihood = rng.dirichlet(np.ones(6), size=4)  # (class, x)
    train = np.array([0, 700, 250, 50])
    target = np.array([0, 100, 300, 600])
    weights = class_weights_from_counts(train).numpy().astype(np.float64)
    # the minimiser of sum_c w_c pi_c p(x|c) (-log q(c|x)) over q is q(c|x) ∝ w_c pi_c p(x|c)
    trained = weights[1:, None] * train[1:, None] * likelihood[1:]
    logits = np.log(trained / trained.sum(0))
    corrected = logits + label_shift_offsets(train, target)[1:, None]
    posterior = np.exp(corrected) / np.exp(corrected).sum(0)
    truth = target[1:, None] * likelihood[1:]
    assert np.allclose(posterior, truth / truth.sum(0))


def test_classes_without_points_keep_finite_offsets():
    offsets = label_shift_offsets([0, 10, 0, 5], [0, 0, 4, 4])
    assert np.isfinite(offsets).all()


@pytest.mark.parametrize(("train", "target", "message"), [
    ([0, 1, 2], [0, 1], "differ in length"),
    ([5, 0, 0], [0, 1, 1], "training class counts hold no labelled point"),
    ([0, 1, 2], [0, -1, 1], "target class counts must be finite and >= 0"),
])
def test_bad_counts_are_refused_naming_what_is_wrong(train, target, message):
    with pytest.raises(ValueError, match=message):
        label_shift_offsets(train, target)


def test_folding_the_offsets_shifts_every_logit_by_its_class_offset():
    student = Student(StudentConfig(hidden_channels=8, decoder_channels=8, num_classes=5)).eval()
    hidden = torch.randn(30, 8)
    before = student.decode(hidden)
    offsets = np.array([0.0, 1.5, -2.0, 0.25, 3.0])
    add_logit_offsets(student, offsets)
    assert torch.allclose(student.decode(hidden) - before, torch.tensor(offsets, dtype=torch.float32).expand(30, 5),
                          atol=1e-6)
    with pytest.raises(ValueError, match="3 logit offsets for a classifier of 5 classes"):
        add_logit_offsets(student, np.zeros(3))


def test_the_fusion_student_is_shifted_in_its_3d_decoder():
    student = FusionStudent(FusionConfig(lidar=StudentConfig(hidden_channels=8, decoder_channels=8)))
    assert output_layer(student) is student.lidar.classifier[-1]
