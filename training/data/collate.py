"""Collate `Sample`s into a typed `Batch` for the student (points) and the teacher (images).

Unlike the reference's `collate_fn_default` (ref §2), per-sample metadata is kept for every sample,
not only the first, and the images are zero-padded to the teacher's square input here (bottom/right,
ref §2 step 9), so workers hand over one tensor per batch.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from elite_ros_training.data.augment import TEACHER_INPUT_SIZE
from elite_ros_training.data.pipeline import Sample


@dataclass
class Batch:
    """A training batch.

    Student:
        points: (Np, 4) float32 augmented x, y, z (metres) + intensity of all samples, concatenated.
        batch_index: (Np,) int64 sample of each point.
        labels: (Np,) int64 training ids (0 = ignored).
        ref_index: (Np,) int64 index of each point in its original scan.
        point_offsets: (B + 1,) int64: sample b owns points[point_offsets[b]:point_offsets[b + 1]].
    Teacher (None / empty when the samples have no camera):
        images: (B, 3, S, S) float32 SAM-normalised crops, zero-padded bottom/right (S = teacher input).
        image_size: (height, width) of the crop inside the padded image.
        pixels: per sample (Ni_b, 2) int64 (row, col) in the crop.
        point_to_pixel: per sample (Ni_b,) int64 index into that sample's points.
        pixel_labels: (sum Ni_b,) int64 sparse 2D labels (the projected LiDAR labels).
        pseudo_labels: (B, h, w) int64 dense SAM-PLG labels, or None when any sample lacks them.
        image_present: (B,) bool False where modality dropout withholds the image from the fusion student's
            input (`Sample.image_withheld`); None without images.
    frame_ids: per sample, the source frame.
    num_scan_points: (B,) int64 points of each original scan.
    """

    points: torch.Tensor
    batch_index: torch.Tensor
    labels: torch.Tensor
    ref_index: torch.Tensor
    point_offsets: torch.Tensor
    images: torch.Tensor | None
    image_size: tuple[int, int] | None
    pixels: list[torch.Tensor]
    point_to_pixel: list[torch.Tensor]
    pixel_labels: torch.Tensor
    pseudo_labels: torch.Tensor | None
    frame_ids: list[str]
    num_scan_points: torch.Tensor
    image_present: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return len(self.frame_ids)

    def point_to_pixel_global(self) -> torch.Tensor:
        """(sum Ni_b,) int64 indices into the concatenated `points` of every projected point."""
        return torch.cat([idx + self.point_offsets[b] for b, idx in enumerate(self.point_to_pixel)])

    def _map(self, fn) -> Batch:
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = fn(value)
            elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
                value = [fn(v) for v in value]
            values[f.name] = value
        return Batch(**values)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by `DataLoader(pin_memory=True)`."""
        return self._map(lambda t: t.pin_memory())


def collate(samples: list[Sample], teacher_input_size: int | None = TEACHER_INPUT_SIZE) -> Batch:
    """Concatenate points, stack (and pad) images. `teacher_input_size=None` keeps the crop size."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    counts = np.array([len(s.points) for s in samples], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    with_image = [s.image is not None for s in samples]
    if any(with_image) and not all(with_image):
        missing = [s.frame_id for s in samples if s.image is None]
        raise ValueError(f"cannot batch samples with and without images (no image: {missing})")

    images = image_size = pseudo = present = None
    if all(with_image):
        shapes = {s.image.shape for s in samples}
        if len(shapes) != 1:
            raise ValueError(f"image crops differ in size: {sorted(shapes)}")
        channels, height, width = shapes.pop()
        side_h = height if teacher_input_size is None else teacher_input_size
        side_w = width if teacher_input_size is None else teacher_input_size
        if side_h < height or side_w < width:
            raise ValueError(f"crop {width}x{height} is larger than the teacher input {teacher_input_size}")
        images = torch.zeros(len(samples), channels, side_h, side_w, dtype=torch.float32)
        for b, s in enumerate(samples):
            images[b, :, :height, :width] = torch.from_numpy(s.image)
        image_size = (height, width)
        present = torch.tensor([not s.image_withheld for s in samples], dtype=torch.bool)
        if all(s.pseudo_labels is not None for s in samples):
            pseudo = torch.from_numpy(np.stack([s.pseudo_labels for s in samples]))

    return Batch(
        points=torch.from_numpy(np.concatenate([s.points for s in samples])),
        batch_index=torch.from_numpy(np.repeat(np.arange(len(samples), dtype=np.int64), counts)),
        labels=torch.from_numpy(np.concatenate([s.labels for s in samples])),
        ref_index=torch.from_numpy(np.concatenate([s.ref_index for s in samples])),
        point_offsets=torch.from_numpy(offsets),
        images=images,
        image_size=image_size,
        pixels=[torch.from_numpy(s.pixels) for s in samples],
        point_to_pixel=[torch.from_numpy(s.point_to_pixel) for s in samples],
        pixel_labels=torch.from_numpy(np.concatenate([s.pixel_labels for s in samples])),
        pseudo_labels=pseudo,
        frame_ids=[s.frame_id for s in samples],
        num_scan_points=torch.tensor([s.num_scan_points for s in samples], dtype=torch.int64),
        image_present=present,
    )
