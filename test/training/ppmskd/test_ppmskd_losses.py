"""PPMSKD losses: weighted CE, KD divergence, class weights, Lovasz-softmax against its definition."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elite_ros_training.ppmskd import (
    class_weights_from_counts,
    cross_entropy,
    kd_divergence,
    lovasz_softmax,
    segmentation_loss,
)

# The official SemanticKITTI config's per-class point counts (seg_labelweights, class 0 = 0) and the CE weights
# the reference lists for them (docs/reference.md §6), classes 1..19.
SEMANTICKITTI_COUNTS = [0, 55437630, 320797, 541736, 2578735, 3274484, 552662, 184064, 78858, 240942562,
                        17294618, 170599734, 6369672, 230413074, 101130274, 476491114, 9833174, 129609852,
                        4506626, 1168181]
REFERENCE_WEIGHTS = [2.048, 11.41, 9.581, 5.696, 5.26, 9.518, 13.731, 18.214, 1.255, 3.02, 1.408, 4.214, 1.274,
                     1.676, 1.0, 3.646, 1.543, 4.729, 7.416]


# ------------------------------------------------------------------------------------------ cross-entropy
def test_cross_entropy_weighted_mean_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([1, 2, 0, 1])  # row 2 is ignored
    weights = torch.tensor([0.0, 2.0, 0.5])

    def nll(row: int, label: int) -> float:
        values = logits[row].tolist()
        return math.log(sum(math.exp(v) for v in values)) - values[label]

    expected = (2.0 * nll(0, 1) + 0.5 * nll(1, 2) + 2.0 * nll(3, 1)) / (2.0 + 0.5 + 2.0)
    assert cross_entropy(logits, labels, weights).item() == pytest.approx(expected, rel=1e-6)
    # PyTorch's own weighted mean agrees
    assert cross_entropy(logits, labels, weights).item() == pytest.approx(
        F.cross_entropy(logits, labels, weight=weights, ignore_index=0).item(), rel=1e-6)
    unweighted = (nll(0, 1) + nll(1, 2) + nll(3, 1)) / 3
    assert cross_entropy(logits, labels).item() == pytest.approx(unweighted, rel=1e-6)


def test_cross_entropy_without_labelled_rows_is_zero_and_connected():
    logits = torch.randn(5, 4, requires_grad=True)
    loss = cross_entropy(logits, torch.zeros(5, dtype=torch.int64), torch.ones(4))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros(5, 4))
    assert torch.isnan(F.cross_entropy(logits, torch.zeros(5, dtype=torch.int64), ignore_index=0))  # why it matters
    empty = cross_entropy(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, dtype=torch.int64), torch.ones(4))
    assert empty.item() == 0.0 and empty.requires_grad


def test_cross_entropy_promotes_half_precision():
    logits = torch.randn(6, 3).to(torch.bfloat16)
    labels = torch.tensor([1, 2, 1, 0, 2, 2])
    loss = cross_entropy(logits, labels, torch.tensor([0.0, 1.0, 3.0]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(cross_entropy(logits.float(), labels, torch.tensor([0.0, 1.0, 3.0])).item())


# ------------------------------------------------------------------------------------------ KD divergence
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")  # torch's note on F.kl_div 'mean'
def test_kd_divergence_is_kl_with_mean_reduction_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0], [3.0, 0.0], [0.0, 0.0]], requires_grad=True)
    s = torch.softmax(student.detach(), 1).tolist()
    t = torch.softmax(teacher.detach(), 1).tolist()
    total = sum(t[i][c] * (math.log(t[i][c]) - math.log(s[i][c])) for i in range(3) for c in range(2))
    loss = kd_divergence(student, teacher)
    assert loss.item() == pytest.approx(total / (3 * 2), rel=1e-6)  # 'mean' = sum / (N x C), not / N
    assert loss.item() == pytest.approx(
        F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="mean").item(), rel=1e-6)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None  # the teacher side is detached


def test_kd_divergence_empty_and_equal():
    empty = kd_divergence(torch.zeros(0, 20, requires_grad=True), torch.zeros(0, 20))
    assert empty.item() == 0.0 and empty.requires_grad
    logits = torch.randn(4, 5)
    assert kd_divergence(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="same"):
        kd_divergence(torch.zeros(3, 5), torch.zeros(3, 4))


# ------------------------------------------------------------------------------------------ class weights
def test_class_weights_reproduce_the_reference():
    weights = class_weights_from_counts(SEMANTICKITTI_COUNTS)
    assert weights.dtype == torch.float32 and weights.shape == (20,)
    assert weights[0].item() == 0.0
    assert weights[1:].tolist() == pytest.approx(REFERENCE_WEIGHTS, abs=5e-4)


def test_class_weights_from_counts_proportional_to_the_inverse_cube():
    # w_c = (max n / n_c)^(1/3)  <=>  n_c proportional to 1 / w_c^3, in any unit
    counts = np.array([0.0] + [1e9 / w ** 3 for w in REFERENCE_WEIGHTS])
    weights = class_weights_from_counts(torch.tensor(counts))
    assert weights[1:].tolist() == pytest.approx(REFERENCE_WEIGHTS, rel=1e-6)
    # class 0's count (unlabelled points) changes nothing, however large
    counts[0] = 1e12
    assert class_weights_from_counts(counts).tolist() == pytest.approx(weights.tolist())


def test_class_weights_by_hand_and_unseen_classes():
    weights = class_weights_from_counts([5, 800, 100, 0, 1])
    # max f = 800: w_1 = 1, w_2 = 8^(1/3) = 2, w_4 = 800^(1/3); the unseen class 3 gets the largest of these
    assert weights.tolist() == pytest.approx([0.0, 1.0, 2.0, 800 ** (1 / 3), 800 ** (1 / 3)], rel=1e-6)
    assert torch.isfinite(weights).all()
    with pytest.raises(ValueError, match="no labelled point"):
        class_weights_from_counts([10, 0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        class_weights_from_counts([0, 5, -1])


# ------------------------------------------------------------------------------------------ Lovasz-softmax
def _jaccard_loss(subset: set[int], foreground: set[int]) -> float:
    """Delta_J(S) = |S| / |fg u S| (Berman et al. Eq. 5 written on the set S of mispredicted rows)."""
    return len(subset) / len(foreground | subset) if subset else 0.0


def _lovasz_integral(errors: list[float], foreground: set[int]) -> float:
    """The Lovasz extension as the integral over t in [0, 1] of Delta_J({i: m_i >= t}), exactly
    (the integrand is constant between consecutive distinct error values)."""
    levels = sorted(set(errors), reverse=True) + [0.0]
    return sum((high - low) * _jaccard_loss({i for i, m in enumerate(errors) if m >= high}, foreground)
               for high, low in zip(levels[:-1], levels[1:], strict=True))


def _lovasz_permutation_max(errors: list[float], foreground: set[int]) -> float:
    """The Lovasz extension of a submodular function (the Jaccard loss is one) as the maximum over every
    permutation of the greedy sum sum_i m_pi(i) (Delta(S_i) - Delta(S_{i-1}))."""
    best = -math.inf
    for order in itertools.permutations(range(len(errors))):
        value, previous, prefix = 0.0, 0.0, set()
        for i in order:
            prefix.add(i)
            current = _jaccard_loss(prefix, foreground)
            value += errors[i] * (current - previous)
            previous = current
        best = max(best, value)
    return best


def _brute_force(probs: torch.Tensor, labels: torch.Tensor, classes, ignore_index: int | None = 0,
                 extension=_lovasz_integral) -> float:
    keep = [i for i in range(len(labels)) if ignore_index is None or int(labels[i]) != ignore_index]
    num_classes = probs.shape[1]
    if classes == "present":
        chosen = sorted({int(labels[i]) for i in keep})
    elif classes == "all":
        chosen = list(range(num_classes))
    else:
        chosen = list(classes)
    if not chosen:
        return 0.0
    values = []
    for c in chosen:
        foreground = {j for j, i in enumerate(keep) if int(labels[i]) == c}
        errors = [abs((1.0 if j in foreground else 0.0) - float(probs[i, c])) for j, i in enumerate(keep)]
        values.append(extension(errors, foreground))
    return sum(values) / len(values)


@pytest.mark.parametrize("seed", range(6))
def test_lovasz_softmax_matches_its_definition(seed):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(7, 4, generator=generator, dtype=torch.float64) * 2, dim=1)
    labels = torch.randint(0, 4, (7,), generator=generator)
    labels[0], labels[1] = 0, 2  # at least one ignored and one labelled row
    for classes in ("present", "all", [1, 3]):
        expected = _brute_force(probs, labels, classes)
        assert lovasz_softmax(probs, labels, 0, classes).item() == pytest.approx(expected, abs=1e-12), classes
    # no ignore index: class 0 is an ordinary class
    assert lovasz_softmax(probs, labels, None).item() == pytest.approx(
        _brute_force(probs, labels, "present", None), abs=1e-12)


def test_lovasz_integral_equals_permutation_max():
    """The two brute forces agree (the Jaccard loss is submodular), on generic errors and on ties."""
    generator = torch.Generator().manual_seed(7)
    for _ in range(5):
        errors = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
        foreground = {i for i in range(6) if torch.rand(1, generator=generator).item() < 0.5}
        assert _lovasz_integral(errors, foreground) == pytest.approx(_lovasz_permutation_max(errors, foreground))
    tied = [0.5, 0.5, 0.2, 0.5, 0.0, 0.2]
    assert _lovasz_integral(tied, {0, 2}) == pytest.approx(_lovasz_permutation_max(tied, {0, 2}))


def test_lovasz_softmax_with_ties_against_permutation_max():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5],
                          [0.1, 0.1, 0.8]], dtype=torch.float64)
    labels = torch.tensor([1, 2, 2, 1, 1, 0])
    expected = _brute_force(probs, labels, "present", extension=_lovasz_permutation_max)
    assert lovasz_softmax(probs, labels).item() == pytest.approx(expected, abs=1e-12)


def test_lovasz_softmax_hand_case():
    # two labelled rows of class 1: errors for class 1 are 1 - p = 0.4 and 0.1 -> Jaccard increments 0.5, 0.5
    # -> 0.25; class 2 is absent ('present' skips it); row 2 is ignored
    probs = torch.tensor([[0.0, 0.6, 0.4], [0.0, 0.9, 0.1], [1.0, 0.0, 0.0]])
    labels = torch.tensor([1, 1, 0])
    assert lovasz_softmax(probs, labels).item() == pytest.approx(0.25)
    # 'all' adds class 2 (no foreground: Delta = 1 for any non-empty set -> its largest error, 0.4) and class 0
    # (its errors are 0 on the labelled rows) -> (0.25 + 0.4 + 0) / 3
    assert lovasz_softmax(probs, labels, classes="all").item() == pytest.approx((0.25 + 0.4) / 3)


def test_lovasz_softmax_ignored_rows_change_nothing():
    generator = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(30, 5, generator=generator), dim=1)
    labels = torch.randint(1, 5, (30,), generator=generator)
    extra = torch.softmax(torch.randn(12, 5, generator=generator) * 4, dim=1)
    ignored = torch.zeros(6, dtype=torch.int64)
    with_ignored = lovasz_softmax(torch.cat([extra[:6], probs, extra[6:]]), torch.cat([ignored, labels, ignored]))
    assert with_ignored.item() == pytest.approx(lovasz_softmax(probs, labels).item(), abs=1e-6)


def test_lovasz_softmax_perfect_prediction_and_empty_cases():
    labels = torch.tensor([1, 2, 2, 3, 0])
    perfect = F.one_hot(labels, 4).double()
    assert lovasz_softmax(perfect, labels).item() == 0.0
    probs = torch.rand(4, 3, requires_grad=True)
    none_labelled = lovasz_softmax(probs, torch.zeros(4, dtype=torch.int64))
    assert none_labelled.item() == 0.0
    none_labelled.backward()  # still connected to the graph
    assert probs.grad is not None and torch.equal(probs.grad, torch.zeros(4, 3))
    empty = lovasz_softmax(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, dtype=torch.int64))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="classes"):
        lovasz_softmax(probs, torch.ones(4, dtype=torch.int64), classes="most")


def test_lovasz_softmax_gradient():
    generator = torch.Generator().manual_seed(11)
    probs = torch.softmax(torch.randn(9, 4, generator=generator, dtype=torch.float64), 1).requires_grad_()
    labels = torch.tensor([1, 2, 3, 1, 0, 2, 2, 3, 1])
    assert torch.autograd.gradcheck(lambda p: lovasz_softmax(p, labels), (probs,))


def test_segmentation_loss_weights_lovasz_only():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(20, 4, generator=generator)
    labels = torch.randint(0, 4, (20,), generator=generator)
    weights = torch.tensor([0.0, 1.0, 2.0, 3.0])
    ce, lovasz = segmentation_loss(logits, labels, weights, 0.1)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, labels, weight=weights, ignore_index=0).item(), rel=1e-6)
    assert lovasz.item() == pytest.approx(0.1 * lovasz_softmax(torch.softmax(logits, 1), labels).item(), rel=1e-6)
