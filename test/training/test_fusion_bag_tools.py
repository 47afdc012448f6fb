"""elite-ros segment / evaluate with a fusion checkpoint on a converted KITTI-layout bag (image, CameraInfo,
static TF), and with --no-camera."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_data import TinyFrames, write_tiny_sequence

from elite_ros.bag import iter_messages
from elite_ros.camera import CameraModel
from elite_ros.checkpoint import make_metadata, save_checkpoint
from elite_ros.cli import main
from elite_ros.cloud import read_points, scan_from_arrays
from elite_ros.fusion import FusionConfig, FusionStudent, ImageFusionConfig
from elite_ros.segmenter import Segmenter
from elite_ros.student import StudentConfig
from elite_ros_training.data.convert import convert_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FRAMES = 3


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fusion_bag")
    sequence = write_tiny_sequence(folder / "seq", count=FRAMES)
    bag = folder / "kitti_tiny.mcap"
    convert_folder(sequence, bag, progress=False)
    torch.manual_seed(0)
    model = FusionStudent(FusionConfig(lidar=StudentConfig(hidden_channels=8, decoder_channels=16),
                                       image=ImageFusionConfig(widths=(4, 8, 8), channels=8)))
    torch.nn.init.normal_(model.to_decoder[2].weight, std=0.5)  # the image changes the labels
    checkpoint = save_checkpoint(folder / "fusion.safetensors", model, make_metadata(model, trained=True))
    return bag, checkpoint


def expected_labels(checkpoint, with_images: bool) -> list[np.ndarray]:
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu", backend="native", warmup=False)
    labels = []
    for frame in TinyFrames(FRAMES):
        scan = scan_from_arrays(frame.points[:, :3], frame.points[:, 3])
        camera = CameraModel(frame.projection, frame.image.shape[1], frame.image.shape[0])
        prediction = segmenter.predict(scan, frame.image, camera) if with_images else segmenter.predict(scan)
        labels.append(prediction.class_id)
    return labels


@pytest.mark.parametrize("no_camera", [False, True])
def test_segment_reads_the_bags_camera_or_falls_back_without_it(recording, tmp_path, capsys, no_camera):
    bag, checkpoint = recording
    out = tmp_path / "out"
    command = ["segment", str(bag), str(out), "--checkpoint", str(checkpoint), "--device", "cpu", "-p",
               "backend=native", "-p", "label_format=class_id", "--no-progress"] + ["--no-camera"] * no_camera
    assert main(command) == 0
    captured = capsys.readouterr()
    if no_camera:
        assert "camera: none (--no-camera)" in captured.err
    else:
        assert "camera: /kitti/camera_color_left/image_raw" in captured.err and "/tf_static" in captured.err
        assert f"{FRAMES} with an image, 0 without" in captured.out
    written = [read_points(m.msg)["class_id"] for m in iter_messages(out)]
    expected = expected_labels(checkpoint, with_images=not no_camera)
    assert len(written) == FRAMES
    for got, want in zip(written, expected):
        np.testing.assert_array_equal(got, want)
    if not no_camera:  # the camera made a difference: the two runs differ where the image is seen
        blind = expected_labels(checkpoint, with_images=False)
        assert any((w != b).any() for w, b in zip(written, blind))


def test_evaluate_reports_the_camera_and_the_fallback(recording, tmp_path, capsys):
    bag, checkpoint = recording
    for name, flags in (("with", []), ("without", ["--no-camera"])):
        report = tmp_path / f"report_{name}"
        assert main(["evaluate", str(bag), "--checkpoint", str(checkpoint), "--device", "cpu", "-p",
                     "backend=native", "--report", str(report), "--no-progress"] + flags) == 0
        text = (report / "report.md").read_text()
        assert ("frames with an image" in text) == (name == "with")
        assert ("every frame on the imputation path" in text) == (name == "without")
    assert "mIoU" in capsys.readouterr().out
