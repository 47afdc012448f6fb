"""Range filter and multi-scale voxelisation (elite_ros/voxel.py) against literal references.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from elite_ros.config_loader import dump_dataclass, load_dataclass
from elite_ros.segments import scatter_mean
from elite_ros.voxel import (
    VoxelConfig,
    coarsen_coords,
    in_range_mask,
    point_cells,
    range_filter,
    voxel_transition,
    voxelise,
)


def _real_points(data_dir, count: int, seed: int = 0) -> torch.Tensor:
    scan = np.fromfile(data_dir / "kitti_odometry" / "seq00" / "000000.bin", dtype=np.float32).reshape(-1, 4)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(scan[rng.choice(scan.shape[0], count, replace=False)])


def _official_voxelisation(xyz: torch.Tensor, batch: torch.Tensor, config: VoxelConfig, scale: int):
    """The official code's voxeliser (ref §2), literally: long(dims * (p - min) / extent), unique(dim=0)."""
    columns = []
    for axis in range(3):
        dims = math.ceil(config.base_cells[axis] / scale)
        columns.append((dims * (xyz[:, axis] - config.min_bound[axis]) /
                        (config.max_bound[axis] - config.min_bound[axis])).long())
    bxyz = torch.stack([batch] + columns, dim=1)
    unique, inverse = torch.unique(bxyz, return_inverse=True, dim=0)
    return bxyz, unique[:, [0, 3, 2, 1]].int(), inverse


def test_config_grid_sizes_follow_the_official_ceil():
    config = VoxelConfig()
    assert config.base_cells == (1000, 1000, 60)
    assert [config.cells(s) for s in config.scales] == [
        (1000, 1000, 60), (500, 500, 30), (250, 250, 15), (125, 125, 8), (63, 63, 4)]
    assert config.spatial_shape(16) == (4, 63, 63)
    assert config.cell_size(8)[2] == pytest.approx(0.75)  # 6 m / 8 cells, not 0.8 m
    assert load_dataclass(VoxelConfig, dump_dataclass(config)) == config


@pytest.mark.parametrize("bad, field", [({"voxel_size": 0}, "voxel_size"), ({"scales": (2, 4)}, "scales"),
                                        ({"min_bound": (0, 0, 5)}, "min_bound z")])
def test_config_rejects_bad_values_naming_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        VoxelConfig(**bad)


def test_loading_rejects_unknown_fields():
    with pytest.raises(ValueError, match="voxel_sise"):
        load_dataclass(VoxelConfig, {"voxel_sise": 0.1})


def test_range_filter_is_strict_and_drops_non_finite():
    xyz = np.array([[0, 0, 0], [50, 0, 0], [-49.99, 49.99, 1.99], [0, 0, -4], [np.nan, 0, 0],
                    [np.inf, 0, 0], [10, -50.001, 0]], dtype=np.float32)
    mask, kept = range_filter(xyz)
    assert mask.tolist() == [True, False, True, False, False, False, False]
    assert kept.tolist() == [0, 2]
    torch_mask, torch_kept = range_filter(torch.from_numpy(xyz))
    assert torch_mask.tolist() == mask.tolist() and torch_kept.tolist() == [0, 2]
    assert in_range_mask(xyz, VoxelConfig(max_bound=(60, 50, 2))).tolist()[1] is True


def test_voxelise_equals_the_official_unique_rows(data_dir):
    points = _real_points(data_dir, 3000)
    xyz = points[:, :3][range_filter(points[:, :3])[0]]
    batch = (torch.arange(xyz.shape[0]) % 2).long()  # two samples sharing space
    config = VoxelConfig()
    voxels = voxelise(xyz, batch, 2, config)
    assert voxels.batch_size == 2 and voxels.num_points == xyz.shape[0]
    for scale in config.scales:
        level = voxels[scale]
        bxyz, official_coords, official_inverse = _official_voxelisation(xyz, batch, config, scale)
        assert level.num_voxels == official_coords.shape[0]
        assert level.coords.dtype == torch.int32 and level.coords.shape[1] == 4
        # the same set of voxels, and every point in the same voxel
        assert set(map(tuple, level.coords.tolist())) == set(map(tuple, official_coords.tolist()))
        expected = bxyz[:, [0, 3, 2, 1]].int()
        assert torch.equal(level.coords[level.point_to_voxel], expected)
        assert torch.equal(level.counts, torch.bincount(level.point_to_voxel, minlength=level.num_voxels))
        # sorted by (batch, z, y, x), unique
        keys = [tuple(r) for r in level.coords.tolist()]
        assert keys == sorted(set(keys))
        assert level.spatial_shape == config.spatial_shape(scale)


def test_coordinates_are_clipped_into_the_grid():
    xyz = torch.tensor([[-60.0, 70.0, -9.0], [49.999, 49.999, 1.999], [50.0, -50.0, 2.0]])
    cells = point_cells(xyz, VoxelConfig(), 1)
    assert cells.tolist() == [[0, 999, 0], [999, 999, 59], [999, 0, 59]]
    voxels = voxelise(xyz)
    for level in voxels.levels.values():
        coords = level.coords
        assert int(coords.min()) >= 0
        assert (coords[:, 1:] < torch.tensor(level.spatial_shape, dtype=torch.int32)).all()


def test_voxelise_empty_and_single_point():
    empty = voxelise(torch.zeros((0, 3)))
    assert empty.num_points == 0 and empty.batch_size == 1
    assert all(level.num_voxels == 0 for level in empty.levels.values())
    single = voxelise(torch.tensor([[1.0, 2.0, 0.5]]))
    assert all(level.num_voxels == 1 for level in single.levels.values())
    assert single[1].coords.tolist() == [[0, 45, 520, 510]]


def test_voxelise_rejects_bad_shapes():
    with pytest.raises(ValueError, match="xyz"):
        voxelise(torch.zeros(5))
    with pytest.raises(ValueError, match="batch_index"):
        voxelise(torch.zeros((5, 3)), torch.zeros(4, dtype=torch.long))


def test_transition_equals_point_level_scatter_mean(data_dir):
    points = _real_points(data_dir, 4000, seed=1)
    xyz = points[:, :3][range_filter(points[:, :3])[0]]
    voxels = voxelise(xyz)
    features = torch.randn(voxels[4].num_voxels, 8, dtype=torch.float64)
    for source, destination in [(4, 8), (8, 16), (1, 2)]:
        features = torch.randn(voxels[source].num_voxels, 8, dtype=torch.float64)
        transition = voxels.transition(source, destination)
        assert transition is voxels.transition(source, destination)  # cached
        expected = scatter_mean(features[voxels[source].point_to_voxel], voxels[destination].point_to_voxel,
                                voxels[destination].num_voxels)
        # the transition's weights are float32 (1/count): near-cancelling means need an absolute tolerance
        assert torch.allclose(transition.apply(features), expected, atol=1e-6)
    # z is not nested at scale 8 (0.75 m cells over 0.4 m ones): some 4 -> 8 voxels really split
    pairs = voxels.transition(4, 8)
    assert pairs.source.shape[0] > voxels[4].num_voxels


def test_coarsened_equals_unique_rows_of_halved_coords():
    coords = torch.tensor([[0, 3, 5, 7], [0, 2, 4, 6], [1, 3, 5, 7], [0, 5, 5, 7], [0, 4, 5, 7]], dtype=torch.int32)
    coarse = coarsen_coords(coords, (8, 8, 8), 2)
    halved = torch.cat([coords[:, :1], coords[:, 1:] // 2], dim=1)
    unique, inverse = torch.unique(halved, return_inverse=True, dim=0)
    assert coarse.num_parents == unique.shape[0] == 3
    # same partition of the voxels
    assert torch.equal(coarse.parent[:, None] == coarse.parent[None, :], inverse[:, None] == inverse[None, :])
    features = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(coarse.mean.apply(features), scatter_mean(features, coarse.parent, 3))


def test_level_mean_equals_scatter_mean(data_dir):
    points = _real_points(data_dir, 2000, seed=2)
    voxels = voxelise(points[:, :3])
    level = voxels[1]
    values = torch.randn(points.shape[0], 6, dtype=torch.float64, requires_grad=True)
    mean = level.mean(values)
    assert torch.allclose(mean, scatter_mean(values, level.point_to_voxel, level.num_voxels))
    mean.sum().backward()
    assert torch.allclose(values.grad[:, 0], 1.0 / level.counts[level.point_to_voxel].double())
    table = voxels.point_to_voxel_table((2, 8))
    assert torch.equal(table[:, 0], voxels[2].point_to_voxel)
    assert torch.equal(table[:, 1], voxels[8].point_to_voxel + voxels[2].num_voxels)


def test_voxel_transition_weights_sum_to_one():
    to_source = torch.tensor([0, 0, 1, 1, 1, 2])
    to_destination = torch.tensor([0, 1, 1, 1, 0, 1])
    transition = voxel_transition(to_source, to_destination, 3, 2)
    sums = torch.zeros(2).index_add_(0, transition.destination, transition.weight)
    assert torch.allclose(sums, torch.ones(2))
    features = torch.tensor([[1.0], [10.0], [100.0]])
    # destination 0 holds points of voxels 0, 1; destination 1 of voxels 0, 1, 1, 2
    assert transition.apply(features).flatten().tolist() == pytest.approx([5.5, (1 + 10 + 10 + 100) / 4])


def test_voxel_combinations_group_points_with_identical_voxels(data_dir):
    points = _real_points(data_dir, 3000, seed=3)
    voxels = voxelise(points[:, :3], (torch.arange(3000) % 2), 2)
    scales = (2, 4, 8, 16)
    rows, inverse = voxels.voxel_combinations(scales)
    table = voxels.point_to_voxel_table(scales)
    assert torch.equal(rows[inverse], table)  # every point's row is its own tuple
    assert rows.shape[0] == torch.unique(table, dim=0).shape[0]  # and the rows are distinct
    assert voxels.voxel_combinations(scales)[0] is rows  # cached
