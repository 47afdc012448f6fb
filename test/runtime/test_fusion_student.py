"""elite_ros/fusion.py: the U2MKD fusion student (image branch, imputation, both fusion directions)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from elite_ros.camera import CameraModel, project_points
from elite_ros.checkpoint import CheckpointError, load_checkpoint, make_metadata, save_checkpoint
from elite_ros.fusion import FusionConfig, FusionInput, FusionStudent, ImageFusionConfig, sample_at_pixels
from elite_ros.student import Student, StudentConfig, StudentInput
from elite_ros.voxel import voxelise

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_LIDAR = StudentConfig(hidden_channels=8, decoder_channels=16)
TINY = FusionConfig(lidar=TINY_LIDAR, image=ImageFusionConfig(widths=(4, 8, 8), channels=8))
# KITTI odometry seq 00's P2 · Tr (the synthetic world's camera) and image size
CAMERA = CameraModel(np.array([[6.07e2, -7.18e2, -1.08e1, -1.32e2], [1.80e2, 7.38, -7.19e2, -4.45e1],
                               [1.0, 4.86e-4, -7.21e-3, -2.89e-1]]), width=1242, height=375)


def tiny_model(seed: int = 0, config: FusionConfig = TINY) -> FusionStudent:
    """A fusion student whose every weight is random (the image path included), in eval mode."""
    torch.manual_seed(seed)
    model = FusionStudent(config, sparse_backend="native")
    torch.nn.init.normal_(model.to_decoder[2].weight, std=0.5)  # zero at construction: give the image a say
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def scan(seed: int = 0, count: int = 3000) -> torch.Tensor:
    """(N, 4) points all around the car (a quarter or so in the camera's view)."""
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.uniform(-30, 30, count), rng.uniform(-30, 30, count), rng.uniform(-2, 1.5, count)])
    return torch.from_numpy(np.column_stack([xyz, rng.uniform(0, 1, count)]).astype(np.float32))


def fusion_input(points: torch.Tensor, image: torch.Tensor | None, present: bool = True) -> FusionInput:
    projection = project_points(points[:, :3].numpy(), CAMERA.projection, CAMERA.width, CAMERA.height)
    voxels = voxelise(points[:, :3], None, 1)
    return FusionInput(points=points, voxels=voxels, images=image,
                       image_present=None if image is None else torch.tensor([present]),
                       pixel_points=torch.from_numpy(projection.index), pixels=torch.from_numpy(projection.pixels))


def random_image(seed: int) -> torch.Tensor:
    return torch.randn(1, 3, CAMERA.height, CAMERA.width, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_points_outside_the_field_of_view_do_not_depend_on_the_image():
    model, points = tiny_model(), scan()
    first = fusion_input(points, random_image(1))
    in_view = torch.zeros(points.shape[0], dtype=torch.bool)
    in_view[first.pixel_points] = True
    assert 0.1 < in_view.float().mean() < 0.5
    one = model(first).logits
    other = model(fusion_input(points, random_image(2))).logits
    without = model(fusion_input(points, None)).logits
    assert torch.equal(one[~in_view], other[~in_view])
    assert torch.equal(one[~in_view], without[~in_view])
    assert (one[in_view] - other[in_view]).abs().max() > 1e-3  # the image does count where it is seen


@torch.no_grad()
def test_without_an_image_every_point_runs_on_the_imputation_path():
    model, points = tiny_model(), scan()
    output = model(fusion_input(points, None))
    assert output.logits.shape == (points.shape[0], TINY_LIDAR.num_classes)
    assert torch.isfinite(output.logits).all()
    assert output.image_features is None and output.imputed is None
    # the imputation path: image features predicted from 3D features, through the decoder
    encoding = model.lidar.encode(StudentInput(points, voxelise(points[:, :3], None, 1)))
    imputed = model.impute(torch.relu(encoding.hidden))
    expected = model.lidar.decode(encoding.hidden + model.to_decoder(imputed)).index_select(0, encoding.point_to_row)
    torch.testing.assert_close(output.logits, expected)
    # a withheld image (training's modality dropout) is the same path, and yields the imputation target
    withheld = model(fusion_input(points, random_image(1), present=False))
    torch.testing.assert_close(withheld.logits, output.logits)
    assert withheld.image_features.shape == withheld.imputed.shape == (len(fusion_input(points, None).pixel_points), 8)


@torch.no_grad()
def test_the_ablations_build_and_differ_where_the_image_is_seen():
    points, image = scan(), random_image(1)
    plain = tiny_model(0, FusionConfig(lidar=TINY_LIDAR, image=ImageFusionConfig(widths=(4, 8, 8), channels=8,
                                                                               imputation=False,
                                                                               points_to_image=False)))
    assert plain.impute is None and plain.points_to_image is None
    output = plain(fusion_input(points, image))
    assert output.imputed is None and output.image_features is not None
    # no imputation: the image-less path feeds zeros
    blind = plain(fusion_input(points, None)).logits
    encoding = plain.lidar.encode(StudentInput(points, voxelise(points[:, :3], None, 1)))
    zeros = torch.zeros(encoding.hidden.shape[0], 8)
    torch.testing.assert_close(blind, plain.lidar.decode(encoding.hidden + plain.to_decoder(zeros))
                               .index_select(0, encoding.point_to_row))


def test_a_lidar_only_checkpoint_loads_into_the_3d_branch_with_every_key(tmp_path):
    torch.manual_seed(3)
    lidar = Student(TINY_LIDAR, sparse_backend="native").eval()
    path = save_checkpoint(tmp_path / "lidar.safetensors", lidar, make_metadata(lidar, trained=True))
    fusion = FusionStudent(TINY, sparse_backend="native").eval()
    assert set(fusion.lidar.state_dict()) == {k.removeprefix("lidar.") for k in fusion.state_dict()
                                              if k.startswith("lidar.")}
    fusion.load_lidar_checkpoint(path)
    for name, value in lidar.state_dict().items():
        assert torch.equal(fusion.lidar.state_dict()[name], value), name
    # untrained image path (to_decoder's last layer at zero): the fusion student is the LiDAR student
    points = scan()
    with torch.no_grad():
        expected = lidar(StudentInput(points, voxelise(points[:, :3], None, 1))).logits
        for image in (random_image(1), None):
            torch.testing.assert_close(fusion(fusion_input(points, image)).logits, expected)


def test_checkpoints_say_their_kind_and_camera_input_and_refuse_the_other_network(tmp_path):
    fusion, lidar = FusionStudent(TINY), Student(TINY_LIDAR)
    fusion_file = save_checkpoint(tmp_path / "fusion.safetensors", fusion)
    lidar_file = save_checkpoint(tmp_path / "lidar.safetensors", lidar)
    loaded = load_checkpoint(fusion_file, FusionStudent(TINY))
    assert loaded.model_kind == "fusion" and loaded.camera_input.pixel_std == (58.395, 57.12, 57.375)
    assert load_checkpoint(lidar_file, Student(TINY_LIDAR)).model_kind == "lidar"
    with pytest.raises(CheckpointError, match="model_kind = 'fusion' in file, 'lidar' in model"):
        load_checkpoint(fusion_file, Student(TINY_LIDAR))
    with pytest.raises(CheckpointError, match="model_kind = 'lidar' in file, 'fusion' in model"):
        load_checkpoint(lidar_file, FusionStudent(TINY))
    with pytest.raises(CheckpointError, match="model_kind = 'fusion' in file, 'lidar' in model"):
        FusionStudent(TINY).load_lidar_checkpoint(fusion_file)
    with pytest.raises(ValueError, match="camera: a .lidar. model must not"):
        save_checkpoint(tmp_path / "bad.safetensors", lidar, make_metadata(lidar, camera={"encoding": "rgb8"}))


def test_pixel_features_are_read_at_pixel_centres_of_the_feature_grid():
    features = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 1, 3, 4)  # 2 images, 3 x 4 cells
    stride = 8
    pixels = torch.tensor([[3, 3], [12, 27], [20, 4], [0, 0]])  # centre of cells (0, 0), (1, 3), (2, 0); edge
    sample = torch.tensor([0, 1, 0, 1])
    out = sample_at_pixels(features, pixels, sample, stride)[:, 0]
    # pixel (3, 3)'s centre (3.5, 3.5) is 0.0625 cells before cell (0, 0)'s centre: border padding -> cell value
    torch.testing.assert_close(out[:3], torch.tensor([0.0, 12.0 + 7.0, 8.0]), atol=0.2, rtol=0)
    assert out[3] == pytest.approx(12.0)
