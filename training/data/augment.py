"""The reference's augmentations (docs/reference.md §2; "ref §N" = docs/reference.md §N), one small function
per step.

3D: range filter, point dropout, rotation about z, flip, x/y scale, translation (composed into one
recorded `RigidAugmentation`), and the re-filter to the voxel grid after augmentation (§10 item 9).
2D: bottom crop, colour jitter (torchvision), horizontal flip, SAM normalisation.
Every random draw comes from the `numpy.random.Generator` passed in, so a sample is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Re-exported from their one home each: the volume and its filter are the runtime's voxel grid box (ref §1/§2),
# the image constants SAM's input (elite_ros_training.sam_input).
from elite_ros.voxel import MAX_BOUND as VOLUME_MAX
from elite_ros.voxel import MIN_BOUND as VOLUME_MIN
from elite_ros.voxel import inside_box as in_volume
from elite_ros_training.sam_input import CROP_SIZE, SAM_PIXEL_MEAN, SAM_PIXEL_STD, normalize_image
from elite_ros_training.sam_input import SAM_INPUT_SIZE as TEACHER_INPUT_SIZE

DROPOUT_MAX_RATIO = 0.2  # dropout ratio r ~ U[0, 0.2) (ref §2 step 2)
SCALE_RANGE = (0.95, 1.05)  # x and y scale factor range, z unscaled (ref §2 step 4)
TRANSLATION_STD = 0.1  # metres, N(0, 0.1) per axis (ref §2 step 4)
COLOR_JITTER = (0.4, 0.4, 0.4)  # brightness, contrast, saturation (ref §1 color_jitter)
FLIP2D_PROBABILITY = 0.5  # horizontal image flip (ref §1 flip2d)

#: the four flips of ref §2 step 4, as diagonal sign vectors: none, x -> -x, y -> -y, both
FLIPS = ((1.0, 1.0, 1.0), (-1.0, 1.0, 1.0), (1.0, -1.0, 1.0), (-1.0, -1.0, 1.0))

__all__ = [
    "COLOR_JITTER", "CROP_SIZE", "DROPOUT_MAX_RATIO", "FLIP2D_PROBABILITY", "FLIPS", "SAM_PIXEL_MEAN",
    "SAM_PIXEL_STD", "SCALE_RANGE", "TEACHER_INPUT_SIZE", "TRANSLATION_STD", "VOLUME_MAX", "VOLUME_MIN",
    "AugmentConfig", "bottom_crop_window", "color_jitter", "CropWindow", "dropout_keep_mask", "in_volume",
    "normalize_image", "remap_after_filter", "RigidAugmentation", "sample_rigid_augmentation",
]


# --------------------------------------------------------------------------------------------- 3D
def dropout_keep_mask(rng: np.random.Generator, num_points: int, max_ratio: float = DROPOUT_MAX_RATIO) -> np.ndarray:
    """(N,) bool keep-mask: a ratio r ~ U[0, max_ratio) is drawn, then each point is dropped with prob. r.

    The reference *overwrites* dropped points with point 0 (duplicating it up to 20 % of the scan, so
    one voxel and one label get a large weight); here dropped points are removed instead, which gives
    the same thinning of the scan without that bias.
    """
    ratio = rng.uniform(0.0, max_ratio)
    return rng.random(num_points) >= ratio


@dataclass(frozen=True)
class RigidAugmentation:
    """The recorded 3D augmentation: augmented = original @ linear.T + translation.

    Attributes:
        angle: rotation about z, radians in [0, 2 pi).
        flip: (3,) +-1 signs applied after the rotation.
        scale: (3,) factors applied after the flip (z is 1).
        translation: (3,) metres, added last.
    """

    angle: float
    flip: np.ndarray
    scale: np.ndarray
    translation: np.ndarray

    @property
    def linear(self) -> np.ndarray:
        """(3, 3) float64 = diag(scale) · diag(flip) · Rz(angle)."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return np.diag(self.scale) @ np.diag(self.flip) @ rotation

    def apply(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) metres -> (N, 3) float32 augmented coordinates."""
        out = np.asarray(xyz, dtype=np.float64)[:, :3] @ self.linear.T + self.translation
        return out.astype(np.float32)

    @staticmethod
    def identity() -> RigidAugmentation:
        return RigidAugmentation(0.0, np.ones(3), np.ones(3), np.zeros(3))

    def then_mirror_y(self) -> RigidAugmentation:
        """This transform followed by y -> -y (diagonal factors commute: the flip and the translation change)."""
        mirror = np.array([1.0, -1.0, 1.0])
        return RigidAugmentation(self.angle, self.flip * mirror, self.scale, self.translation * mirror)


@dataclass(frozen=True)
class AugmentConfig:
    """Which 3D augmentations are on (the reference's rotate/flip/scale/transform/dropout_aug flags)."""

    rotate: bool = True
    flip: bool = True
    scale: tuple[float, float] | None = SCALE_RANGE
    translation_std: float = TRANSLATION_STD
    dropout_max_ratio: float = DROPOUT_MAX_RATIO
    #: probability that a training scan's intensity is zeroed as a whole (ours, not the reference's): the
    #: network then also learns from geometry alone and serves sensors without an intensity field
    intensity_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.intensity_dropout <= 1.0:
            raise ValueError(f"intensity_dropout must lie in [0, 1], got {self.intensity_dropout}")


def sample_rigid_augmentation(rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> RigidAugmentation:
    """Draw the rotation, flip, x/y scale and translation of ref §2 step 4 (each only when enabled)."""
    angle = rng.uniform(0.0, 2.0 * np.pi) if config.rotate else 0.0
    flip = np.array(FLIPS[rng.integers(len(FLIPS))]) if config.flip else np.ones(3)
    scale = np.ones(3)
    if config.scale is not None:
        scale[:2] = rng.uniform(*config.scale)  # one factor for x and y, as the reference
    translation = rng.normal(0.0, config.translation_std, size=3) if config.translation_std > 0 else np.zeros(3)
    return RigidAugmentation(angle=float(angle), flip=flip, scale=scale, translation=translation)


def remap_after_filter(keep: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """After keeping points `keep` (N,) bool, map indices into the old list to the new one.

    Returns (mask over `index` of entries whose point survived, their new indices).
    """
    new_position = np.cumsum(keep) - 1
    survived = keep[index]
    return survived, new_position[index[survived]]


# --------------------------------------------------------------------------------------------- 2D
@dataclass(frozen=True)
class CropWindow:
    """An image window: rows top..top+height, columns left..left+width; `flipped` if mirrored after."""

    top: int
    left: int
    height: int
    width: int
    flipped: bool = False

    def contains(self, pixels: np.ndarray) -> np.ndarray:
        """(M,) bool: which (row, col) pixels (M, 2) lie in the window."""
        rows, cols = pixels[:, 0], pixels[:, 1]
        return ((rows >= self.top) & (rows < self.top + self.height)
                & (cols >= self.left) & (cols < self.left + self.width))

    def to_window(self, pixels: np.ndarray) -> np.ndarray:
        """Full-image (row, col) (M, 2) -> window coordinates, mirrored when `flipped`."""
        out = pixels - np.array([self.top, self.left], dtype=pixels.dtype)
        if self.flipped:
            out[:, 1] = self.width - 1 - out[:, 1]
        return out

    def cut(self, array: np.ndarray) -> np.ndarray:
        """Crop (and mirror) the last two axes (.., H, W) of an array."""
        out = array[..., self.top : self.top + self.height, self.left : self.left + self.width]
        return out[..., ::-1] if self.flipped else out


def bottom_crop_window(
    image_width: int, image_height: int, crop_size: tuple[int, int] = CROP_SIZE, rng: np.random.Generator | None = None
) -> CropWindow:
    """The bottom `crop_size` (width, height) window: left = int(U[0,1) * (W + 1 - width)) (ref §2 step 6).

    Without `rng` (validation) the window is centred horizontally.
    """
    width, height = crop_size
    if image_width < width or image_height < height:
        raise ValueError(f"image {image_width}x{image_height} is smaller than the crop {width}x{height}")
    span = image_width + 1 - width
    left = int(rng.random() * span) if rng is not None else (image_width - width) // 2
    return CropWindow(top=image_height - height, left=left, height=height, width=width)


def color_jitter(image: torch.Tensor, seed: int, strength: tuple[float, float, float] = COLOR_JITTER) -> torch.Tensor:
    """torchvision `ColorJitter(brightness, contrast, saturation)` on a (3, H, W) uint8 tensor.

    ColorJitter draws from torch's global generator; it runs here under a forked generator seeded with
    `seed`, so the result is reproducible and the caller's torch RNG state is untouched.
    """
    from torchvision.transforms import ColorJitter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ColorJitter(*strength)(image)

