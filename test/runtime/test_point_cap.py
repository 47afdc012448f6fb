"""elite_ros.point_cap: the deterministic subsample and the spread of logits to the other points."""
from __future__ import annotations

import torch

from elite_ros.point_cap import doubling_scales, spread, subsample
from elite_ros.voxel import VoxelConfig

CONFIG = VoxelConfig()
XYZ = torch.tensor([[1.01, 1.01, 0.01], [1.02, 1.02, 0.02], [1.03, 1.03, 0.03], [5.0, 5.0, 0.0], [9.0, 9.0, 0.0]])


def test_subsample_takes_one_point_per_voxel_first_then_seeded_others():
    assert subsample(XYZ, 3, CONFIG).tolist() == [0, 3, 4]  # one per 0.1 m voxel, lowest index
    four = subsample(XYZ, 4, CONFIG).tolist()
    assert four[0] == 0 and {3, 4} <= set(four) and len(set(four)) == 4 and four == sorted(four)
    assert subsample(XYZ, 4, CONFIG).tolist() == four  # the same scan keeps the same points


def test_spread_gives_each_point_the_mean_of_the_sampled_points_of_its_finest_shared_voxel():
    sampled = torch.tensor([0, 1, 3])  # two of the 1.0x cluster, one at (5, 5); (9, 9) has no sampled point nearby
    logits = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 7.0]])
    spread_logits, known = spread(XYZ, sampled, logits, CONFIG)
    assert known.all()  # the coarsest scale spans the volume
    assert torch.equal(spread_logits[sampled], logits)
    assert torch.allclose(spread_logits[2], torch.tensor([2.0, 0.0]))  # its 0.1 m voxel: rows 0 and 1
    assert spread_logits[4].argmax() == 1  # nearest sampled point by voxel: (5, 5)


def test_doubling_scales_end_at_a_single_cell():
    scales = doubling_scales(CONFIG)
    assert scales[0] == 1 and all(b == 2 * a for a, b in zip(scales, scales[1:]))
    assert max(CONFIG.cells(scales[-1])) == 1 and max(CONFIG.cells(scales[-2])) > 1
