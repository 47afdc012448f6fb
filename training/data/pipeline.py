"""Per-sample processing of docs/reference.md §2: a `Frame` in, a typed `Sample` out.

Order (training): [PolarMix with another frame of the dataset, `polarmix`, when switched on] -> range
filter -> point dropout -> projection on the un-augmented coordinates (a mixed frame's foreign points get
no pixel) ->
3D augmentation -> re-filter to the voxel grid (§10 item 9; image indices remapped) -> bottom crop ->
colour jitter -> horizontal flip -> SAM normalisation; pseudo labels get the same crop and flip.
Validation: no dropout, no 3D augmentation, a centred crop, no jitter, no flip.
Zero-padding to the teacher's 1024x1024 input happens in `collate` (smaller transfers from workers).

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from elite_ros.labels import to_training_ids
from elite_ros_training.data import augment
from elite_ros_training.data.augment import AugmentConfig, CropWindow, RigidAugmentation
from elite_ros_training.data.frame import Frame
from elite_ros_training.data.polarmix import PolarMixConfig
from elite_ros_training.data.projection import project_points


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of the per-sample processing (defaults = the reference's, ref §1/§2)."""

    volume_min: tuple[float, float, float] = augment.VOLUME_MIN
    volume_max: tuple[float, float, float] = augment.VOLUME_MAX
    augment3d: AugmentConfig = field(default_factory=AugmentConfig)
    crop_size: tuple[int, int] = augment.CROP_SIZE
    color_jitter: tuple[float, float, float] | None = augment.COLOR_JITTER
    flip2d_probability: float = augment.FLIP2D_PROBABILITY
    pixel_mean: tuple[float, float, float] = augment.SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = augment.SAM_PIXEL_STD
    use_pseudo_labels: bool = True
    require_image: bool = True
    #: False: LiDAR only, images are neither required nor processed (a student-only run)
    use_image: bool = True
    #: fusion student (ref §14, ours): probability that a training sample's image is withheld from the input
    #: (modality dropout; the image stays in the batch as the imputation loss's target)
    image_dropout: float = 0.0
    #: fusion student (ref §14, ours): mirror the 3D points (y -> -y) exactly when the image is flipped, so the
    #: two modalities stay mirror images of one scene (the volume must be symmetric in y)
    flip_with_image: bool = False
    #: ref §13 (ours, after PolarMix): mix a training frame with another of the dataset (`dataset` applies it)
    polar_mix: PolarMixConfig = field(default_factory=PolarMixConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.image_dropout <= 1.0:
            raise ValueError(f"image_dropout must lie in [0, 1], got {self.image_dropout}")
        if self.flip_with_image and self.volume_min[1] != -self.volume_max[1]:
            raise ValueError(f"flip_with_image needs a volume symmetric in y, got y in "
                             f"[{self.volume_min[1]}, {self.volume_max[1]}]")


@dataclass
class Sample:
    """One processed training sample (numpy; `collate` turns a list of them into a `Batch`).

    Attributes:
        frame_id: the source frame's name.
        points: (N, 4) float32 augmented x, y, z (metres) + intensity — the student's input.
        labels: (N,) int64 training ids 0..19 (0 = ignored).
        ref_index: (N,) int64 index of each point in the original scan.
        num_scan_points: number of points in the original scan.
        augmentation: the 3D transform applied: points[:, :3] = apply(scan xyz[ref_index]).
        image: (3, h, w) float32 SAM-normalised crop, or None without a camera.
        pixels: (Ni, 2) int64 (row, col) in the (flipped) crop of each point that projects into it.
        point_to_pixel: (Ni,) int64 index into `points` of those points.
        pixel_labels: (Ni,) int64 training ids of those points (the sparse 2D labels).
        pseudo_labels: (h, w) int64 dense SAM-PLG semantic ids in the crop (0 = ignored), or None.
        crop: the image window used (in full-image pixels) and whether it was mirrored.
        image_withheld: True when modality dropout withholds the image from the fusion student's input.
    """

    frame_id: str
    points: np.ndarray
    labels: np.ndarray
    ref_index: np.ndarray
    num_scan_points: int
    augmentation: RigidAugmentation
    image: np.ndarray | None
    pixels: np.ndarray
    point_to_pixel: np.ndarray
    pixel_labels: np.ndarray
    pseudo_labels: np.ndarray | None
    crop: CropWindow | None
    image_withheld: bool = False


def build_sample(frame: Frame, config: PipelineConfig, rng: np.random.Generator, train: bool) -> Sample:
    """Run the §2 processing on one frame; every random draw comes from `rng`."""
    scan = frame.points
    if frame.labels is not None:
        labels = to_training_ids(frame.labels).astype(np.int64)
    else:
        labels = np.zeros(len(scan), np.int64)

    # 1. range filter (strict), keeping the index into the original scan
    ref_index = np.flatnonzero(augment.in_volume(scan, config.volume_min, config.volume_max))
    # 2. point dropout (removal, see augment.dropout_keep_mask)
    if train and config.augment3d.dropout_max_ratio > 0:
        ref_index = ref_index[augment.dropout_keep_mask(rng, len(ref_index), config.augment3d.dropout_max_ratio)]
    xyz = scan[ref_index, :3]

    # 3. projection on the un-augmented coordinates
    has_camera = config.use_image and frame.image is not None and frame.projection is not None
    if not has_camera and config.require_image and config.use_image:
        raise ValueError(f"frame {frame.frame_id}: no image or no projection matrix "
                         f"(set require_image=False for LiDAR-only)")
    if has_camera:
        height, width = frame.image.shape[:2]
        projection = project_points(xyz, frame.projection, width, height)
        point_to_pixel, pixels = projection.index, projection.pixels
        if frame.camera_mask is not None:  # a mixed frame: only the image's own points get a pixel
            seen = frame.camera_mask[ref_index[point_to_pixel]]
            point_to_pixel, pixels = point_to_pixel[seen], pixels[seen]
    else:
        point_to_pixel, pixels = np.zeros(0, np.int64), np.zeros((0, 2), np.int64)

    # 4. 3D augmentation, then 5. re-filter to the grid (keeping image indices consistent)
    rigid = augment.sample_rigid_augmentation(rng, config.augment3d) if train else RigidAugmentation.identity()
    xyz_aug = rigid.apply(xyz) if train else xyz.astype(np.float32)
    inside = augment.in_volume(xyz_aug, config.volume_min, config.volume_max)
    survived, point_to_pixel = augment.remap_after_filter(inside, point_to_pixel)
    pixels = pixels[survived]
    ref_index, xyz_aug = ref_index[inside], xyz_aug[inside]
    points = np.concatenate([xyz_aug, scan[ref_index, 3:4]], axis=1).astype(np.float32)
    if train and config.augment3d.intensity_dropout > 0 and rng.random() < config.augment3d.intensity_dropout:
        points[:, 3] = 0.0  # a scan without intensity, as from an xyz-only sensor
    point_labels = labels[ref_index]

    image = pseudo = crop = None
    if has_camera:
        # 6. bottom crop; keep the projected points inside it
        crop = augment.bottom_crop_window(width, height, config.crop_size, rng if train else None)
        in_crop = crop.contains(pixels)
        point_to_pixel, pixels = point_to_pixel[in_crop], pixels[in_crop]
        # 8. horizontal flip (decided now, applied with the crop to image, pixels and pseudo labels)
        flipped = bool(train and rng.random() < config.flip2d_probability)
        crop = CropWindow(crop.top, crop.left, crop.height, crop.width, flipped)
        if flipped and config.flip_with_image:  # ref §14: both modalities mirrored together
            points[:, 1] = -points[:, 1]
            rigid = rigid.then_mirror_y()
        pixels = crop.to_window(pixels)
        image_t = torch.from_numpy(np.ascontiguousarray(crop.cut(frame.image.transpose(2, 0, 1))))
        # 7. colour jitter (commutes with the flip: it is per-pixel and image-global)
        if train and config.color_jitter is not None:
            image_t = augment.color_jitter(image_t, int(rng.integers(2**62)), config.color_jitter)
        # 9. SAM normalisation
        image = augment.normalize_image(image_t, config.pixel_mean, config.pixel_std).numpy()
        if config.use_pseudo_labels and frame.pseudo_labels is not None:
            pseudo = np.ascontiguousarray(crop.cut(frame.pseudo_labels[0])).astype(np.int64)
    # modality dropout, drawn last (earlier draws, and so every other config's samples, stay as they were)
    withheld = bool(train and image is not None and config.image_dropout > 0 and rng.random() < config.image_dropout)

    return Sample(
        frame_id=frame.frame_id,
        points=points,
        labels=point_labels,
        ref_index=ref_index.astype(np.int64),
        num_scan_points=len(scan),
        augmentation=rigid,
        image=image,
        pixels=pixels.astype(np.int64),
        point_to_pixel=point_to_pixel.astype(np.int64),
        pixel_labels=point_labels[point_to_pixel],
        pseudo_labels=pseudo,
        crop=crop,
        image_withheld=withheld,
    )
