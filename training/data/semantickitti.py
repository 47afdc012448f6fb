"""Readers for KITTI / SemanticKITTI folders and the SAM-PLG pseudo-label file convention.

Two layouts are read:

* a **sequence folder** (KITTI odometry / SemanticKITTI, also what `training/synthetic` writes)::

      velodyne/000000.bin  labels/000000.label  image_2/000000.png  image_2_labels/000000.npz
      calib.txt (P0..P3, Tr)  poses.txt  times.txt

* a **KITTI object folder** (`training/`): ``velodyne/<id>.bin``, ``image_2/<id>.png`` and a calibration per
  frame ``calib/<id>.txt`` (P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo).

Formats (KITTI devkit / SemanticKITTI API): `.bin` float32 (N, 4) x, y, z, intensity; `.label` uint32 (N,)
semantic | instance << 16; calibration lines ``KEY: v0 v1 ...`` row-major; `poses.txt` 12 numbers per line
(3x4 camera pose); `times.txt` one time in seconds per line.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elite_ros.atomic import atomic_file
from elite_ros.kitti import POINT_DIMS, KittiFormatError, read_bin, read_label, read_times  # noqa: F401 (re-exported)
from elite_ros_training.data.frame import Frame
from elite_ros_training.data.projection import projection_matrix, to_homogeneous

PSEUDO_LABEL_DIR = "image_2_labels"  # SAM-PLG maps next to image_2 (ref §9, stored compressed here)
PSEUDO_LABEL_KEY = "labels"  # np.savez_compressed key of the (2, H, W) uint16 map


# ----------------------------------------------------------------------------------------- raw files
# read_bin / read_label / read_times live in elite_ros.kitti (shared with bag replay).


def write_bin(path: str | Path, points: np.ndarray) -> None:
    """(N, 4) x, y, z, intensity -> a velodyne `.bin` (float32)."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != POINT_DIMS:
        raise ValueError(f"points must be (N, 4), got {points.shape}")
    points.tofile(path)


def read_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """A KITTI calibration text file -> {key: float64 array of its values} (flat, row-major)."""
    path = Path(path)
    entries: dict[str, np.ndarray] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, values = line.partition(":")
        if not sep:
            raise KittiFormatError(f"{path}:{number}: expected 'KEY: values', got {line[:40]!r}")
        try:
            entries[key.strip()] = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError as error:
            raise KittiFormatError(f"{path}:{number} ({key.strip()}): {error}") from None
    return entries


def _matrix(entries: dict[str, np.ndarray], key: str, shape: tuple[int, int], path: Path) -> np.ndarray:
    if key not in entries:
        raise KittiFormatError(f"{path}: no '{key}' entry (has {', '.join(entries) or 'nothing'})")
    values = entries[key]
    if values.size != shape[0] * shape[1]:
        raise KittiFormatError(f"{path}: '{key}' has {values.size} values, expected {shape[0] * shape[1]}")
    return values.reshape(shape)


@dataclass(frozen=True)
class Calibration:
    """The left colour camera's calibration relative to the LiDAR.

    Attributes:
        p2: (3, 4) float64 rectified camera matrix of camera 2 (left colour), pixels.
        tr: (4, 4) float64 LiDAR -> reference camera (odometry `Tr`, object `Tr_velo_to_cam`), metres.
        r0_rect: (3, 3) float64 rectification (object format only; the odometry `Tr` already includes it).
    """

    p2: np.ndarray
    tr: np.ndarray
    r0_rect: np.ndarray | None = None

    @property
    def velo_to_camera(self) -> np.ndarray:
        """(4, 4) LiDAR -> rectified reference camera frame (R0_rect · Tr); P2 projects from this frame."""
        rect = np.eye(4) if self.r0_rect is None else to_homogeneous(self.r0_rect)
        return rect @ self.tr

    @property
    def velo_to_camera2(self) -> np.ndarray:
        """(4, 4) LiDAR -> camera 2's own optical frame (shifted by K2^-1 · P2[:, 3] from the reference).

        K2 · velo_to_camera2[:3] = P2 · velo_to_camera with K2 = P2[:, :3]: the frame a TF to
        `camera_color_left` describes (as kitti2bag publishes it).
        """
        offset = np.linalg.solve(self.p2[:, :3], self.p2[:, 3])
        shift = np.eye(4)
        shift[:3, 3] = offset
        return shift @ self.velo_to_camera

    @property
    def projection(self) -> np.ndarray:
        """(3, 4) LiDAR -> pixel matrix P2 · [R0_rect ·] Tr."""
        return projection_matrix(self.p2, self.tr, self.r0_rect)


def read_calib(path: str | Path) -> Calibration:
    """Odometry (`P2`, `Tr`) or object (`P2`, `R0_rect`, `Tr_velo_to_cam`) calibration -> `Calibration`."""
    path = Path(path)
    entries = read_calib_file(path)
    p2 = _matrix(entries, "P2", (3, 4), path)
    if "Tr" in entries:
        return Calibration(p2=p2, tr=to_homogeneous(_matrix(entries, "Tr", (3, 4), path)))
    if "Tr_velo_to_cam" in entries:
        return Calibration(
            p2=p2,
            tr=to_homogeneous(_matrix(entries, "Tr_velo_to_cam", (3, 4), path)),
            r0_rect=_matrix(entries, "R0_rect", (3, 3), path) if "R0_rect" in entries else None,
        )
    raise KittiFormatError(f"{path}: neither 'Tr' (odometry) nor 'Tr_velo_to_cam' (object) is present")


def read_poses(path: str | Path) -> np.ndarray:
    """`poses.txt` -> (F, 4, 4) float64 poses (12 values per line = the top 3x4 rows)."""
    path = Path(path)
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if any(len(r) != 12 for r in rows):
        bad = next(i for i, r in enumerate(rows, start=1) if len(r) != 12)
        raise KittiFormatError(f"{path}:{bad}: a pose needs 12 numbers, got {len(rows[bad - 1])}")
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    if rows:
        poses[:, :3, :] = np.array(rows, dtype=np.float64).reshape(-1, 3, 4)
    return poses




def read_image(path: str | Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header only."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


# ------------------------------------------------------------------------------- pseudo labels (§9)
def pseudo_label_path(sequence_dir: str | Path, frame_id: str) -> Path:
    """Where the SAM-PLG map of a frame lives: ``<sequence>/image_2_labels/<id>.npz``."""
    return Path(sequence_dir) / PSEUDO_LABEL_DIR / f"{frame_id}.npz"


def save_pseudo_labels(path: str | Path, labels: np.ndarray) -> None:
    """Write a (2, H, W) uint16 (semantic training id, instance id) map compressed, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] != 2 or labels.dtype != np.uint16:
        raise ValueError(f"pseudo labels must be (2, H, W) uint16, got {labels.shape} {labels.dtype}")
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **{PSEUDO_LABEL_KEY: labels})


def load_pseudo_labels(path: str | Path) -> np.ndarray:
    """Read a SAM-PLG map written by `save_pseudo_labels` -> (2, H, W) uint16."""
    path = Path(path)
    with np.load(path) as archive:
        if PSEUDO_LABEL_KEY not in archive:
            raise KittiFormatError(f"{path}: no '{PSEUDO_LABEL_KEY}' array (has {', '.join(archive.files)})")
        labels = archive[PSEUDO_LABEL_KEY]
    if labels.ndim != 3 or labels.shape[0] != 2:
        raise KittiFormatError(f"{path}: pseudo labels must be (2, H, W), got {labels.shape}")
    return labels.astype(np.uint16, copy=False)


# ------------------------------------------------------------------------------------ the folder
class SequenceFolder:
    """Random access to the frames of one KITTI / SemanticKITTI folder (sequence or object layout).

    Labels, images, calibration, times, poses and pseudo labels are optional: what is missing is None
    (see `has_labels`, `has_images`). Frames are the sorted `velodyne/*.bin` stems.
    """

    def __init__(self, root: str | Path, *, load_images: bool = True, load_pseudo_labels: bool = True) -> None:
        self.root = Path(root)
        velodyne = self.root / "velodyne"
        if not velodyne.is_dir():
            raise KittiFormatError(f"{self.root}: no 'velodyne' folder (not a KITTI / SemanticKITTI sequence)")
        self.frame_ids = sorted(p.stem for p in velodyne.glob("*.bin"))
        if not self.frame_ids:
            raise KittiFormatError(f"{velodyne}: no .bin scans")
        self.load_images = load_images
        self.load_pseudo_labels = load_pseudo_labels
        self.has_labels = all((self.root / "labels" / f"{i}.label").is_file() for i in self.frame_ids)
        self.has_images = all((self.root / "image_2" / f"{i}.png").is_file() for i in self.frame_ids)
        self.per_frame_calib = (self.root / "calib").is_dir()
        self._calib = None if self.per_frame_calib else self._read_sequence_calib()
        self.times = self._read_optional(self.root / "times.txt", read_times)
        self.poses = self._read_optional(self.root / "poses.txt", read_poses)

    def _read_sequence_calib(self) -> Calibration | None:
        path = self.root / "calib.txt"
        return read_calib(path) if path.is_file() else None

    def _read_optional(self, path: Path, reader) -> np.ndarray | None:
        if not path.is_file():
            return None
        values = reader(path)
        if len(values) < len(self.frame_ids):
            raise KittiFormatError(f"{path}: {len(values)} entries for {len(self.frame_ids)} scans")
        return values

    def __len__(self) -> int:
        return len(self.frame_ids)

    def calibration(self, index: int) -> Calibration | None:
        """The calibration of frame `index` (the sequence's, or the object frame's own)."""
        if not self.per_frame_calib:
            return self._calib
        path = self.root / "calib" / f"{self.frame_ids[index]}.txt"
        return read_calib(path) if path.is_file() else None

    def timestamp_ns(self, index: int) -> int | None:
        """Time of frame `index` from `times.txt`, nanoseconds since the sequence start, or None."""
        return None if self.times is None else int(round(self.times[index] * 1e9))

    def path(self, kind: str, index: int) -> Path:
        """The file of frame `index`: kind in {'velodyne', 'labels', 'image_2', 'pseudo_labels'}."""
        frame_id = self.frame_ids[index]
        suffix = {"velodyne": ".bin", "labels": ".label", "image_2": ".png"}
        if kind == "pseudo_labels":
            return pseudo_label_path(self.root, frame_id)
        if kind not in suffix:
            raise ValueError(f"unknown file kind {kind!r}")
        return self.root / kind / f"{frame_id}{suffix[kind]}"

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames in {self.root}")
        index %= len(self)
        points = read_bin(self.path("velodyne", index))
        label_path = self.path("labels", index)
        labels = read_label(label_path, len(points)) if label_path.is_file() else None
        image_path = self.path("image_2", index)
        image = read_image(image_path) if self.load_images and image_path.is_file() else None
        calib = self.calibration(index)
        pseudo = None
        pseudo_path = self.path("pseudo_labels", index)
        if image is not None and self.load_pseudo_labels and pseudo_path.is_file():
            pseudo = load_pseudo_labels(pseudo_path)
        return Frame(
            frame_id=self.frame_ids[index],
            points=points,
            labels=labels,
            image=image,
            projection=None if calib is None else calib.projection,
            pseudo_labels=pseudo,
            timestamp_ns=self.timestamp_ns(index),
        )


def sequence_folders(root: str | Path, sequences: list[str] | tuple[str, ...]) -> list[SequenceFolder]:
    """SemanticKITTI ``<root>/sequences/<XX>`` (or ``<root>/<XX>``) folders for the given sequence ids."""
    root = Path(root)
    base = root / "sequences" if (root / "sequences").is_dir() else root
    return [SequenceFolder(base / s) for s in sequences]
