"""elite_ros.segments: key grouping and per-segment reductions against torch.unique and plain loops."""
from __future__ import annotations

import torch

from elite_ros.segments import first_offsets, scatter_max, scatter_mean, sorted_groups


def test_scatter_mean_and_max_against_a_loop():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(200, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 30, (200,), generator=generator)
    mean = scatter_mean(values, index, 32)
    maximum = scatter_max(values.detach(), index, 32)
    for segment in range(32):
        rows = values[index == segment]
        if rows.shape[0]:
            assert torch.allclose(mean[segment], rows.mean(0))
            assert torch.equal(maximum[segment], rows.detach().max(0).values)
        else:
            assert mean[segment].abs().sum() == 0 and maximum[segment].abs().sum() == 0
    counts = torch.bincount(index, minlength=32)
    assert torch.allclose(scatter_mean(values, index, 32, counts), mean)
    mean.sum().backward()  # differentiable: d mean / d value = 1 / count
    assert torch.allclose(values.grad[:, 0], 1.0 / counts[index].double())
    column = scatter_mean(values.detach()[:, 1], index, 32)  # 1-D values take the index_add_ path
    assert torch.allclose(column, mean.detach()[:, 1])


def test_sorted_groups_equal_torch_unique():
    key = torch.tensor([7, 3, 7, 7, 1, 3, 9], dtype=torch.int64)
    unique, inverse, counts, order, offsets = sorted_groups(key)
    expected_unique, expected_inverse, expected_counts = torch.unique(key, return_inverse=True, return_counts=True)
    assert torch.equal(unique, expected_unique) and torch.equal(inverse, expected_inverse)
    assert torch.equal(counts, expected_counts)
    assert torch.equal(key[order], torch.sort(key, stable=True).values)
    assert offsets.tolist() == [0, 1, 3, 6]
    empty = sorted_groups(torch.zeros(0, dtype=torch.int64))
    assert all(t.numel() == 0 for t in empty)


def test_first_offsets_are_the_running_sum_of_the_group_sizes():
    assert first_offsets(torch.tensor([2, 1, 3])).tolist() == [0, 2, 3]
    assert first_offsets(torch.tensor([4])).tolist() == [0]
    assert first_offsets(torch.zeros(0, dtype=torch.int64)).numel() == 0


def test_sorted_groups_sort_large_and_negative_keys_as_int64():
    key = torch.tensor([1 << 40, -5, 1 << 40, 3], dtype=torch.int64)  # outside the int32 fast path
    unique, inverse, counts, _, _ = sorted_groups(key)
    assert unique.tolist() == [-5, 3, 1 << 40] and unique.dtype == torch.int64
    assert inverse.tolist() == [2, 0, 2, 1] and counts.tolist() == [1, 1, 2]
