"""A set of synthetic drives named by seed: what a training config asks for, rendered once into a folder.

    spec = SyntheticDrives(train_seeds=(1, 2, 3), val_seeds=(901,))
    train, val = render_drives(spec, Path("runs/synthetic"))   # sequence folders, reused when complete

Every drive is a SemanticKITTI sequence folder ``<kind>_s<seed>_f<frames>x<every>[_dense]`` (the name
says everything that decides its content, so a folder of the same name is the same drive and is reused).
Training and validation drives must come from different seeds: different streets, not neighbouring frames
of the same one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .sequence import generate_sequence


@dataclass(frozen=True)
class SyntheticDrives:
    """Which drives: seeds, frames per drive, and the frame stride along each 10 Hz drive."""

    train_seeds: tuple[int, ...]
    val_seeds: tuple[int, ...] = ()
    frames: int = 15
    every: int = 5
    val_frames: int = 10
    val_every: int = 8
    #: also write the camera's per-pixel classes as pseudo-label maps (dense 2D labels for a teacher)
    dense_labels: bool = False

    def __post_init__(self) -> None:
        if not self.train_seeds:
            raise ValueError("train_seeds must name at least one drive")
        shared = sorted(set(self.train_seeds) & set(self.val_seeds))
        if shared:
            raise ValueError(f"seed(s) {shared} are both training and validation drives")
        for name in ("frames", "every", "val_frames", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(seed < 0 for seed in self.train_seeds + self.val_seeds):
            raise ValueError("seeds must be >= 0")


def drive_name(kind: str, seed: int, frames: int, every: int, dense_labels: bool) -> str:
    """The folder name of one drive (it encodes everything that decides its content)."""
    return f"{kind}_s{seed}_f{frames}x{every}" + ("_dense" if dense_labels else "")


def drive_names(spec: SyntheticDrives) -> tuple[list[str], list[str]]:
    """(training, validation) folder names of the drives of `spec`."""
    train = [drive_name("train", s, spec.frames, spec.every, spec.dense_labels) for s in spec.train_seeds]
    val = [drive_name("val", s, spec.val_frames, spec.val_every, spec.dense_labels) for s in spec.val_seeds]
    return train, val


def only_these_drives(spec: SyntheticDrives, paths: tuple[str, ...] | list[str]) -> bool:
    """True when every path is one of the training drives of `spec` (the data were synthetic only)."""
    names = set(drive_names(spec)[0])
    return bool(paths) and all(Path(p).name in names for p in paths)


def render_drives(spec: SyntheticDrives, folder: Path, progress: bool = True) -> tuple[list[Path], list[Path]]:
    """Render the drives of `spec` that `folder` lacks; returns (training folders, validation folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    train_names, val_names = drive_names(spec)
    jobs = [("train", name, seed, spec.frames, spec.every) for name, seed in zip(train_names, spec.train_seeds)]
    jobs += [("val", name, seed, spec.val_frames, spec.val_every) for name, seed in zip(val_names, spec.val_seeds)]
    paths: dict[str, list[Path]] = {"train": [], "val": []}
    for kind, name, seed, frames, every in tqdm(jobs, desc="synthetic drives", unit="drive", disable=not progress):
        path = folder / name
        if not (path / "velodyne").is_dir():  # written atomically: a folder that exists is complete
            try:
                generate_sequence(path, frames, seed, progress=False, every=every, dense_labels=spec.dense_labels)
            except FileExistsError:
                if not (path / "velodyne").is_dir():  # not another process of the same run finishing first
                    raise
        paths[kind].append(path)
    return paths["train"], paths["val"]
