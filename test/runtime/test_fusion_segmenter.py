"""Segmenter with a fusion checkpoint: predict(scan, image=None, camera=None)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from elite_ros.camera import forward_camera
from elite_ros.checkpoint import make_metadata, save_checkpoint
from elite_ros.cloud import scan_from_arrays
from elite_ros.fusion import FusionConfig, FusionStudent, ImageFusionConfig
from elite_ros.segmenter import Segmenter
from elite_ros.student import Student, StudentConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_LIDAR = StudentConfig(hidden_channels=8, decoder_channels=16)
TINY = FusionConfig(lidar=TINY_LIDAR, image=ImageFusionConfig(widths=(4, 8, 8), channels=8))
CAMERA = forward_camera(width=320, height=96, focal=180.0)


@pytest.fixture(scope="module")
def fusion_file(tmp_path_factory):
    torch.manual_seed(0)
    model = FusionStudent(TINY)
    torch.nn.init.normal_(model.to_decoder[2].weight, std=0.5)  # give the image a say
    return save_checkpoint(tmp_path_factory.mktemp("fusion") / "fusion.safetensors", model,
                           make_metadata(model, trained=True))


def scan_and_view(seed: int = 0, count: int = 4000):
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.uniform(-40, 40, count), rng.uniform(-40, 40, count),
                           rng.uniform(-2, 1.5, count)]).astype(np.float32)
    xyz[:50] = [80.0, 0.0, 0.0]  # outside the grid: unlabelled
    scan = scan_from_arrays(xyz, rng.uniform(0, 1, count).astype(np.float32))
    in_view = np.zeros(count, dtype=bool)
    in_view[CAMERA.project(xyz).index] = True
    return scan, in_view


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (CAMERA.height, CAMERA.width, 3), dtype=np.uint8)


def test_without_an_image_every_point_gets_a_label_on_the_imputation_path(fusion_file):
    segmenter = Segmenter.from_checkpoint(fusion_file, device="cpu", backend="native")  # warms both paths up
    assert isinstance(segmenter.model, FusionStudent) and segmenter.camera_input is not None
    scan, in_view = scan_and_view()
    prediction = segmenter.predict(scan)
    assert prediction.class_id.shape == (4000,)
    assert (prediction.probability[50:] > 0).all() and (prediction.class_id[:50] == 0).all()
    seen = segmenter.predict(scan, image(1), CAMERA)
    assert np.array_equal(seen.class_id[~in_view], prediction.class_id[~in_view])
    assert in_view.sum() > 300 and (seen.probability[in_view] != prediction.probability[in_view]).any()


def test_points_outside_the_view_keep_their_labels_whatever_the_image_with_votes_and_a_cap(fusion_file):
    segmenter = Segmenter.from_checkpoint(fusion_file, device="cpu", backend="native", warmup=False, tta_votes=2)
    scan, in_view = scan_and_view()
    one, other = (segmenter.predict(scan, image(seed), CAMERA) for seed in (1, 2))
    np.testing.assert_array_equal(one.probability[~in_view], other.probability[~in_view])
    assert (one.probability[in_view] != other.probability[in_view]).any()
    capped = Segmenter.from_checkpoint(fusion_file, device="cpu", backend="native", warmup=False, max_points=2500)
    batch = capped.predict_batch([scan, scan], [image(1), None], [CAMERA, None])
    assert all((p.probability[50:] > 0).all() for p in batch)


def test_bad_camera_input_is_refused_and_a_lidar_model_ignores_the_image(fusion_file, tmp_path):
    segmenter = Segmenter.from_checkpoint(fusion_file, device="cpu", backend="native", warmup=False)
    scan, _ = scan_and_view()
    with pytest.raises(ValueError, match="needs its camera"):
        segmenter.predict(scan, image(1))
    with pytest.raises(ValueError, match="its camera 320x96"):
        segmenter.predict(scan, image(1)[:, :100], CAMERA)
    lidar = Student(TINY_LIDAR)
    path = save_checkpoint(tmp_path / "lidar.safetensors", lidar, make_metadata(lidar))
    plain = Segmenter.from_checkpoint(path, device="cpu", backend="native", warmup=False)
    assert plain.camera_input is None
    np.testing.assert_array_equal(plain.predict(scan, image(1), CAMERA).probability, plain.predict(scan).probability)
