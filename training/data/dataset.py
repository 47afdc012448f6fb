"""The torch `Dataset` for training: frames from a folder or a bag -> processed `Sample`s.

    dataset = PointImageDataset(open_frames("drive.mcap"), train=True, seed=0)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2, collate_fn=collate)

Each sample's random draws come from a generator seeded by (seed, epoch, index), so a sample is the
same whichever worker builds it; call `set_epoch(e)` to get new augmentations every epoch. With
`polar_mix.probability` > 0 a training sample may be mixed with another frame (`polarmix`), drawn from a
stream of its own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from elite_ros_training.data.frame import ConcatFrames, Frame, FrameSource
from elite_ros_training.data.pipeline import PipelineConfig, Sample, build_sample
from elite_ros_training.data.polarmix import polar_mix

POLAR_MIX_STREAM = 2  # the 4th seed word of the PolarMix draws ([seed, epoch, index] drive the sample's own)


class PointImageDataset(Dataset):
    """Synchronised LiDAR + camera samples with the ELiTe augmentations (`train=False`: none)."""

    def __init__(self, frames: FrameSource, config: PipelineConfig | None = None, *, train: bool = True,
                 seed: int = 0) -> None:
        self.frames = frames
        self.config = config or PipelineConfig()
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws for a new epoch (with persistent workers, call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The generator of sample `index` in `epoch` (default: the current epoch)."""
        return np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])

    def __getitem__(self, index: int) -> Sample:
        """Sample `index` of the current epoch; an index ``epoch * len(self) + i`` is sample i of that
        epoch (how `datamodule.EpochIndexSampler` pins every sample's draws to its epoch)."""
        epoch, index = divmod(int(index), len(self)) if index >= len(self) else (self.epoch, int(index))
        frame = self.frames[index]
        if self.train and self.config.polar_mix.probability > 0 and len(self) > 1:
            frame = self._polar_mixed(frame, index, epoch)
        return build_sample(frame, self.config, self.rng(index, epoch), self.train)

    def _polar_mixed(self, frame: Frame, index: int, epoch: int) -> Frame:
        """`frame`, or (with polar_mix.probability) its mix with another frame drawn from the dataset; the
        draws come from a stream of their own, so the sample's other augmentations stay as without it."""
        rng = np.random.default_rng([self.seed, epoch, index, POLAR_MIX_STREAM])
        if rng.random() >= self.config.polar_mix.probability:
            return frame
        partner = int(rng.integers(len(self) - 1))
        partner += partner >= index  # any frame but this one
        return polar_mix(frame, self.frames[partner], rng, self.config.polar_mix)


def open_frames(path: str | Path, *, images: bool = True, **bag_options) -> FrameSource:
    """Frames from a SemanticKITTI / KITTI folder, a SemanticKITTI root of sequences, or a bag.

    A folder with `velodyne/` is one sequence; a folder whose sub-folders have `velodyne/` (or a
    `sequences/` folder) is read as all of them; anything else is opened as a rosbag
    (`bag_dataset.BagFrames`, which accepts `bag_options`). images=False: LiDAR only (folders skip
    reading images; bags no longer require a camera).
    """
    from elite_ros_training.data.semantickitti import SequenceFolder

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset: {path}")
    if (path / "velodyne").is_dir():
        return SequenceFolder(path, load_images=images)
    base = path / "sequences" if (path / "sequences").is_dir() else path
    if base.is_dir():
        sequences = sorted(p for p in base.iterdir() if (p / "velodyne").is_dir())
        if sequences:
            return ConcatFrames([SequenceFolder(p, load_images=images) for p in sequences])
    from elite_ros_training.data.bag_dataset import BagFrames

    if not images:
        bag_options.setdefault("require_image", False)
    return BagFrames(path, **bag_options)
