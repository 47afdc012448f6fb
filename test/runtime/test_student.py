"""The student network (elite_ros/student.py): exact size, exact function, typed stage outputs, backends.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from elite_ros.config_loader import dump_dataclass, load_dataclass
from elite_ros.sparse import SparseGrid, available_backends
from elite_ros.student import (
    EXPECTED_PARAMETERS,
    SparseBasicBlock,
    Student,
    StudentConfig,
    StudentInput,
    count_parameters,
)
from elite_ros.voxel import VoxelConfig, range_filter, voxelise


def _scan(data_dir, name: str = "kitti_odometry/seq00/000000.bin") -> torch.Tensor:
    points = np.fromfile(data_dir / name, dtype=np.float32).reshape(-1, 4)
    points = torch.from_numpy(points)
    return points[range_filter(points[:, :3])[0]]


def _randomise_batch_norm(model: Student, seed: int = 0) -> Student:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
    return model


def _mean(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Segment mean with index_reduce_ (independent of voxel.scatter_mean)."""
    out = values.new_zeros((int(index.max()) + 1, values.shape[1]))
    return out.index_reduce_(0, index, values, "mean", include_self=False)


def _official_forward(model: Student, points: torch.Tensor, batch: torch.Tensor, batch_size: int,
                      backend: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """docs/reference.md §2-§3 transcribed literally: unique(dim=0) voxels, every MLP per point.

    Returns (logits (Np, 20), per-stage voxel-branch features gathered to points).
    """
    config = VoxelConfig()
    xyz = points[:, :3]
    scales = {}
    for scale in config.scales:
        columns = [(math.ceil(config.base_cells[a] / scale) * (xyz[:, a] - config.min_bound[a]) /
                    config.extent[a]).long() for a in range(3)]
        full = torch.stack([batch] + columns, dim=1)  # b x y z
        unique, inverse = torch.unique(full, return_inverse=True, dim=0)
        scales[scale] = (full, inverse, unique[:, [0, 3, 2, 1]].int())
    full, inverse, coords = scales[1]
    corner = full[:, 1:].float() * torch.tensor(config.cell_size(1)) + torch.tensor(config.min_bound)
    point_input = torch.cat([points, xyz - _mean(xyz, inverse)[inverse], xyz - corner], dim=1)
    features = _mean(model.input_mlp(point_input), inverse)
    coords_inverse = inverse
    decoder_inputs, stage_points = [], []
    for block in model.stages:
        scale, out_scale = block.scale, block.out_scale
        grid = SparseGrid(coords, config.spatial_shape(scale), batch_size, backend=backend)
        encoded = features
        for basic in block.voxel_encoder:
            encoded = basic(encoded, grid)
        stage_points.append(encoded[scales[scale][1]])
        pooled = _mean(encoded[scales[scale][1]], scales[out_scale][1])
        encoder = block.point_encoder
        mixed = features + encoded
        down = torch.cat([coords[:, :1], coords[:, 1:] // 2], dim=1).long()
        down_inverse = torch.unique(down, return_inverse=True, dim=0)[1]
        context = encoder.context(_mean(mixed, down_inverse))[down_inverse]
        fused = torch.cat([encoder.identity(mixed), context], dim=1)
        point_features = _mean(encoder.output(fused[coords_inverse]), scales[out_scale][1])
        coords, coords_inverse = scales[out_scale][2], scales[out_scale][1]
        features = point_features + pooled
        decoder_inputs.append(point_features[coords_inverse])
    return model.classifier(torch.cat(decoder_inputs, dim=1)), stage_points


def test_parameter_count_is_exactly_the_papers():
    model = Student()
    assert count_parameters(model) == EXPECTED_PARAMETERS == 1_933_460
    assert count_parameters(model.input_mlp) == 4_864
    assert count_parameters(model.stages[0].voxel_encoder[0]) == 225_664
    assert count_parameters(model.stages[0].point_encoder) == 21_952
    assert all(count_parameters(stage) == 473_280 for stage in model.stages)
    assert count_parameters(model.classifier) == 35_476
    convs = [m for m in model.modules() if m.__class__.__name__ == "SubMConv3d"]
    assert len(convs) == 24 and all(m.bias is None for m in convs)
    assert sorted({tuple(m.weight.shape) for m in convs}) == [(64, 1, 1, 1, 64), (64, 3, 3, 3, 64)]


@pytest.mark.filterwarnings("ignore:index_reduce:UserWarning")
def test_forward_equals_the_literal_reference(data_dir):
    """The rewritten forward (voxel-level MLPs, pair transitions, split decoder) computes ref §3 exactly."""
    points = _scan(data_dir)
    rng = np.random.default_rng(0)
    points = points[torch.from_numpy(np.sort(rng.choice(points.shape[0], 6000, replace=False)))]
    batch = torch.from_numpy(rng.integers(0, 2, points.shape[0]))  # two samples, interleaved
    torch.manual_seed(0)
    model = _randomise_batch_norm(Student(sparse_backend="native")).eval()
    with torch.no_grad():
        output = model(StudentInput.from_points(points, batch, 2))
        expected_logits, expected_stages = _official_forward(model, points, batch, 2, "native")
    assert output.logits.shape == (points.shape[0], 20)
    torch.testing.assert_close(output.logits, expected_logits, rtol=1e-4, atol=1e-4)
    assert [stage.scale for stage in output.stages] == [1, 2, 4, 8]
    for stage, expected in zip(output.stages, expected_stages):
        assert stage.voxel_features.shape[1] == 64
        assert stage.point_to_voxel.shape == (points.shape[0],)
        torch.testing.assert_close(stage.point_features(), expected, rtol=1e-4, atol=1e-4)


def test_samples_of_a_batch_do_not_interact(data_dir):
    points = _scan(data_dir)[::40]
    torch.manual_seed(1)
    model = _randomise_batch_norm(Student(sparse_backend="native")).eval()
    shifted = points.clone()
    shifted[:, 0] += 0.05
    both = torch.cat([points, shifted])
    batch = torch.cat([torch.zeros(points.shape[0]), torch.ones(points.shape[0])]).long()
    with torch.no_grad():
        alone = model(StudentInput.from_points(points)).logits
        together = model(StudentInput.from_points(both, batch, 2)).logits
    torch.testing.assert_close(together[:points.shape[0]], alone, rtol=1e-4, atol=1e-4)


def test_training_step_reaches_every_parameter(data_dir):
    points = _scan(data_dir)[::60]
    torch.manual_seed(2)
    model = Student(StudentConfig(hidden_channels=16, decoder_channels=16), sparse_backend="auto").train()
    batch = StudentInput.from_points(points)
    assert model.backend_for(points.device) == "native"  # spconv has no CPU backward
    output = model(batch)
    labels = torch.randint(1, 20, (points.shape[0],))
    loss = torch.nn.functional.cross_entropy(output.logits, labels)
    loss = loss + sum(stage.voxel_features.square().mean() for stage in output.stages) * 1e-3
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_basic_block_shares_one_kernel_map_per_grid():
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 2], [0, 2, 2, 2]], dtype=torch.int32)
    grid = SparseGrid(coords, (4, 4, 4), 1, backend="native")
    block = SparseBasicBlock(4, 4)
    block(torch.randn(3, 4), grid)
    block(torch.randn(3, 4), grid)
    assert grid.kernel_map_builds == 1


def test_config_round_trip_and_validation():
    config = StudentConfig()
    assert load_dataclass(StudentConfig, dump_dataclass(config)) == config
    assert config.input_scales == (1, 2, 4, 8)
    with pytest.raises(ValueError, match="stage_scales"):
        StudentConfig(stage_scales=(4, 2))
    with pytest.raises(ValueError, match="hidden_channels"):
        StudentConfig(hidden_channels=0)
    with pytest.raises(ValueError, match="colour"):
        load_dataclass(StudentConfig, {"colour": 1})


def test_rejects_points_that_do_not_match_the_voxels():
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8), sparse_backend="native").eval()
    points = torch.rand(10, 4)
    with pytest.raises(ValueError, match=r"points must be \(N, 4\)"):
        model(StudentInput(points=points[:, :3], voxels=voxelise(points[:, :3])))
    with pytest.raises(ValueError, match="10 points but the voxelisation has 9"):
        model(StudentInput(points=points, voxels=voxelise(points[:9, :3])))


@pytest.mark.skipif("spconv" not in available_backends(), reason="spconv not importable")
def test_backends_agree_on_a_real_scan(data_dir):
    """native and spconv (and torchsparse where installed) give the same logits on the 124,668-point scan."""
    points = _scan(data_dir)
    torch.manual_seed(3)
    model = _randomise_batch_norm(Student()).eval()
    batch = StudentInput.from_points(points)
    results = {}
    for backend in available_backends():
        model.sparse_backend = backend
        with torch.inference_mode():
            results[backend] = model(batch)
    reference = results.pop("native")
    for backend, output in results.items():
        torch.testing.assert_close(output.logits, reference.logits, rtol=1e-4, atol=1e-4, msg=backend)
        for stage, expected in zip(output.stages, reference.stages):
            torch.testing.assert_close(stage.voxel_features, expected.voxel_features, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("count", [0, 1, 2])
def test_empty_and_tiny_clouds(count):
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8), sparse_backend="native").eval()
    with torch.no_grad():
        output = model(StudentInput.from_points(torch.rand(count, 4) * 4))
    assert output.logits.shape == (count, 20)
    assert [stage.voxel_features.shape for stage in output.stages] == [(count, 8)] * 4


def test_fused_inference_block_equals_conv_bn_path(data_dir):
    """Eval + no grad on native: BN folded into the convs and the shortcut summed at the centre offset
    computes what conv -> BN -> LeakyReLU -> conv -> BN + shortcut -> LeakyReLU computes."""
    points = _scan(data_dir)[::8]
    voxels = voxelise(points[:, :3])
    level = voxels[1]
    grid = SparseGrid(level.coords, level.spatial_shape, 1, backend="native")
    torch.manual_seed(3)
    block = SparseBasicBlock(64, 64)
    generator = torch.Generator().manual_seed(4)
    for norm in (block.norm1, block.norm2, block.shortcut_norm):
        norm.running_mean.copy_(torch.rand(64, generator=generator) - 0.5)
        norm.running_var.copy_(torch.rand(64, generator=generator) + 0.5)
        norm.weight.data.copy_(torch.rand(64, generator=generator) + 0.5)
        norm.bias.data.copy_(torch.rand(64, generator=generator) - 0.5)
    block.eval()
    features = torch.randn(grid.num_sites, 64, generator=generator)
    with torch.no_grad():
        assert block._can_fuse(features, grid)
        fused = block(features, grid)
    with torch.enable_grad():  # autograd on: the conv -> BN path
        assert not block._can_fuse(features, grid)
        expected = block(features, grid).detach()
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-4)
    block.train()
    with torch.no_grad():  # training mode uses batch statistics: never fused
        assert not block._can_fuse(features, grid)
