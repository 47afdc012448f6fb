"""elite_ros.camera_link: a scan's points linked to its image, and the fusion batch's camera fields."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from elite_ros.camera import CameraInput, forward_camera
from elite_ros.camera_link import camera_batch, link_image

CPU = torch.device("cpu")
CAMERA = forward_camera(64, 32, focal=30.0)
IMAGE = np.full((32, 64, 3), 128, np.uint8)
XYZ = np.array([[10.0, 0.0, 0.0], [-10.0, 0.0, 0.0], [10.0, 1.0, 0.5], [10.0, 100.0, 0.0]], np.float32)


def test_link_image_keeps_the_points_in_view_and_their_sampled_rows():
    link = link_image(XYZ, IMAGE, CAMERA, CameraInput(), CPU, None, "scan 0")
    assert link.rows.tolist() == [0, 2]  # behind the camera and far to the side: no pixel
    assert link.pixels.shape == (2, 2) and link.image.shape == (3, 32, 64)
    capped = link_image(XYZ, IMAGE, CAMERA, CameraInput(), CPU, torch.tensor([1, 2, 3]), "scan 0")
    assert capped.rows.tolist() == [1]  # row 2 of the scan is row 1 of the sampled points
    assert torch.equal(capped.pixels, link.pixels[1:])


@pytest.mark.parametrize("image, camera, message", [
    (IMAGE, None, "scan 4: an image needs its camera"),
    (IMAGE[:, :, 0], CAMERA, r"scan 4: image must be \(H, W, 3\) uint8 RGB"),
    (IMAGE.astype(np.float32), CAMERA, r"scan 4: image must be \(H, W, 3\) uint8 RGB"),
    (IMAGE[:16], CAMERA, "scan 4: image is 64x16, its camera 64x32"),
])
def test_link_image_names_the_scan_and_what_is_wrong(image, camera, message):
    with pytest.raises(ValueError, match=message):
        link_image(XYZ, image, camera, CameraInput(), CPU, None, "scan 4")


def test_camera_batch_pads_images_and_offsets_every_votes_rows():
    small = link_image(XYZ, IMAGE[:16, :32], forward_camera(32, 16, focal=15.0), CameraInput(), CPU, None, "s")
    large = link_image(XYZ, IMAGE, CAMERA, CameraInput(), CPU, None, "s")
    fields = camera_batch([small, None, large], [4, 3, 4], votes=2, device=CPU)
    assert fields["images"].shape == (6, 3, 32, 64)
    assert fields["image_present"].tolist() == [True, True, False, False, True, True]
    assert (fields["images"][0, :, 16:] == 0).all()  # zero padding below the small image
    offsets = [0, 4, 14, 18]  # scan 0 votes at 0 and 4, scan 1 (3 points x 2 votes) skipped, scan 2 at 14 and 18
    expected = torch.cat([small.rows + offsets[0], small.rows + offsets[1], large.rows + offsets[2],
                          large.rows + offsets[3]])
    assert torch.equal(fields["pixel_points"], expected)
    assert fields["pixels"].shape == (expected.shape[0], 2)
    assert camera_batch([None, None], [4, 3], votes=1, device=CPU) == {}
