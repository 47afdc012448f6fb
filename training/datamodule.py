"""Training and validation batches for Lightning: frames -> augmented samples -> `Batch`, sharded per process.

Sampling (docs/reference.md §7 for the batch sizes, ours for the rest):
- training: torch's `DistributedSampler` (shuffled with the run's seed, `drop_last`), wrapped so that
  it yields ``epoch * len(dataset) + index``: the dataset reads the epoch from the index, so a sample's
  augmentation is fixed by (seed, epoch, index) whichever process or worker builds it, and a resumed run
  sees exactly the batches an uninterrupted one would. Lightning calls `set_epoch` every epoch.
- validation: each process takes every world_size-th frame, without the padding `DistributedSampler`
  adds (padded duplicates would be counted twice by the summed confusion matrix).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from elite_ros.labels import NUM_CLASSES, to_training_ids
from elite_ros_training.config import TrainConfig
from elite_ros_training.data.augment import in_volume
from elite_ros_training.data.collate import collate
from elite_ros_training.data.dataset import PointImageDataset, open_frames
from elite_ros_training.data.frame import ConcatFrames, FrameSource


class EpochIndexSampler(Sampler[int]):
    """A sampler with `set_epoch` whose indices carry the epoch: ``epoch * length + index``."""

    def __init__(self, sampler: DistributedSampler, length: int) -> None:
        self.sampler = sampler
        self.length = length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * self.length
        return (offset + index for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class ShardSampler(Sampler[int]):
    """Frames rank, rank + world, rank + 2 world, ... in order; no padding, so shards may differ by one."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def open_all(paths: Sequence[str], *, images: bool) -> FrameSource:
    """Every path (folder, root of sequences or bag) as one frame source."""
    if not paths:
        raise ValueError("no data given")
    sources = [open_frames(path, images=images) for path in paths]
    return sources[0] if len(sources) == 1 else ConcatFrames(sources)


def count_labels(frames: FrameSource, config: TrainConfig, progress: bool = True) -> np.ndarray:
    """(NUM_CLASSES,) int64 points per training id over the in-volume points of every frame."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    pipeline = config.data.pipeline
    for index in tqdm(range(len(frames)), desc="counting labels", unit="frame", disable=not progress):
        frame = frames[index]
        if frame.labels is None:
            continue
        inside = in_volume(frame.points, pipeline.volume_min, pipeline.volume_max)
        counts += np.bincount(to_training_ids(frame.labels[inside]), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts


class ELiTeDataModule(L.LightningDataModule):
    """Datasets and loaders of one `TrainConfig`. `train_frames` / `val_frames` override the config's paths."""

    def __init__(self, config: TrainConfig, *, train_frames: FrameSource | None = None,
                 val_frames: FrameSource | None = None, progress: bool = True) -> None:
        super().__init__()
        self.config = config
        self.progress = progress
        fusion = config.student.fusion is not None
        camera = config.teacher is not None or fusion
        pipeline = replace(config.data.pipeline, use_image=camera, require_image=camera)
        self.train_pipeline = pipeline
        # validation scores the student alone, without augmentation: no image, except for a fusion student
        self.val_pipeline = replace(config.data.pipeline, use_image=fusion, require_image=fusion)
        if train_frames is None:
            train_frames = open_all(config.data.train, images=camera)
        if val_frames is None and config.data.val:
            val_frames = open_all(config.data.val, images=fusion)
        self.train_set = PointImageDataset(train_frames, pipeline, train=True, seed=config.trainer.seed)
        self.val_set = None if val_frames is None else PointImageDataset(val_frames, self.val_pipeline, train=False)
        # the SAM teacher's square input; a fusion student takes its crops as they are
        self.teacher_input = config.teacher.encoder.img_size if config.teacher is not None else None

    def summary(self) -> dict[str, object]:
        """What the run trains and validates on (into the checkpoint metadata)."""
        return {"train": list(self.config.data.train), "val": list(self.config.data.val),
                "train_frames": len(self.train_set), "val_frames": 0 if self.val_set is None else len(self.val_set)}

    def class_counts(self) -> np.ndarray:
        """The configured label counts, else counted over the training frames."""
        if self.config.data.class_counts is not None:
            counts = np.asarray(self.config.data.class_counts, dtype=np.int64)
            if counts.shape != (NUM_CLASSES,):
                raise ValueError(f"data.class_counts must hold {NUM_CLASSES} values, got {counts.shape[0]}")
            return counts
        return count_labels(self.train_set.frames, self.config, self.progress)

    def steps_per_epoch(self, world_size: int) -> int:
        """Optimiser steps per epoch on `world_size` processes (drop_last, gradient accumulation)."""
        batches = len(self.train_set) // world_size // self.config.data.batch_size
        if batches < 1:
            raise ValueError(f"{len(self.train_set)} training frames are fewer than one batch of "
                             f"{self.config.data.batch_size} per process on {world_size} process(es)")
        return max(1, batches // self.config.trainer.accumulate_grad_batches)

    def total_steps(self, world_size: int) -> int:
        """Optimiser steps of the whole run (the cosine schedule and AdaLoRA's budget schedule span it)."""
        epochs = self.config.trainer.max_epochs * self.steps_per_epoch(world_size)
        steps = self.config.trainer.max_steps
        return epochs if steps is None else min(steps, epochs)

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def _loader(self, dataset: PointImageDataset, sampler: Sampler[int], batch_size: int,
                teacher_input: int | None, drop_last: bool) -> DataLoader:
        workers = self.config.data.num_workers
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          collate_fn=partial(collate, teacher_input_size=teacher_input), drop_last=drop_last,
                          persistent_workers=workers > 0, pin_memory=self._on_gpu())

    def _on_gpu(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True,
                                     seed=self.config.trainer.seed, drop_last=True)
        return self._loader(self.train_set, EpochIndexSampler(sampler, len(self.train_set)),
                            self.config.data.batch_size, self.teacher_input, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        rank, world = self._rank()
        return self._loader(self.val_set, ShardSampler(len(self.val_set), rank, world),
                            self.config.data.val_batch_size, None, drop_last=False)

