"""PPMSKD targets: the majority label of the points in each voxel."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from elite_ros_training.ppmskd import voxel_majority_labels


def _brute_force(labels: list[int], point_to_voxel: list[int], num_voxels: int) -> list[int]:
    result = []
    for voxel in range(num_voxels):
        votes = Counter(label for label, v in zip(labels, point_to_voxel, strict=True) if v == voxel)
        best = max(votes.values(), default=0)
        result.append(min((label for label, n in votes.items() if n == best), default=0))
    return result


def test_majority_ties_and_ignore():
    labels = torch.tensor([1, 1, 2,   3, 2,   0, 0, 5,   0, 0,   7, 0,   4])
    voxels = torch.tensor([0, 0, 0,   1, 1,   2, 2, 2,   3, 3,   4, 4,   6])
    result = voxel_majority_labels(labels, voxels, num_voxels=7, num_classes=8)
    assert result.dtype == torch.int64
    # 0: majority 1; 1: tie 2/3 -> lowest id 2; 2: ignore wins the vote; 3: only ignored points -> 0;
    # 4: tie between 0 and 7 -> 0 (ignore takes part, lowest id); 5: no point -> 0; 6: single point
    assert result.tolist() == [1, 2, 0, 0, 0, 0, 4]


@pytest.mark.parametrize("seed", range(3))
def test_majority_matches_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (300,), generator=generator)
    voxels = torch.randint(0, 40, (300,), generator=generator)
    result = voxel_majority_labels(labels, voxels, 45, 5)
    assert result.tolist() == _brute_force(labels.tolist(), voxels.tolist(), 45)


def test_majority_empty_and_bad_input():
    empty = torch.zeros(0, dtype=torch.int64)
    assert voxel_majority_labels(empty, empty, 0, 20).shape == (0,)
    assert voxel_majority_labels(empty, empty, 3, 20).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="labels must lie"):
        voxel_majority_labels(torch.tensor([20]), torch.tensor([0]), 1, 20)
    with pytest.raises(ValueError, match="point_to_voxel must lie"):
        voxel_majority_labels(torch.tensor([1]), torch.tensor([1]), 1, 20)
    with pytest.raises(ValueError, match="same"):
        voxel_majority_labels(torch.tensor([1, 2]), torch.tensor([0]), 1, 20)
