"""The U2MKD teacher: a LiDAR-only student from a runtime checkpoint, frozen (docs/reference.md §14).

It is any `model_kind: lidar` checkpoint of this package (`elite-ros-train export`, `import-official`) on
the same voxel grid and stage scales as the fusion student's 3D branch; its width may differ (a bigger
teacher). It never trains: no parameter requires a gradient and it stays in eval mode (running BatchNorm
statistics) whatever Lightning's `train()` calls say.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from elite_ros.checkpoint import CheckpointError, load_checkpoint, read_metadata
from elite_ros.config_loader import load_dataclass
from elite_ros.student import Student, StudentConfig, StudentInput, StudentOutput
from elite_ros.voxel import VoxelConfig


class LidarTeacher(nn.Module):
    """A frozen LiDAR-only student. `forward(StudentInput) -> StudentOutput` without gradients."""

    def __init__(self, network: Student) -> None:
        super().__init__()
        self.network = network
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.train(False)

    @property
    def config(self) -> StudentConfig:
        return self.network.config

    @classmethod
    def from_checkpoint(cls, path: str | Path, voxel: VoxelConfig, stage_scales: tuple[int, ...],
                        sparse_backend: str = "auto") -> LidarTeacher:
        """Load a LiDAR-only checkpoint strictly; refuse (CheckpointError naming the field) another model
        kind, another voxel grid or other stage scales than the student's."""
        metadata = read_metadata(path)
        if metadata.model_kind != "lidar":
            raise CheckpointError(f"{path}: model_kind = {metadata.model_kind!r}, a U2MKD teacher must be a "
                                  "LiDAR-only ('lidar') checkpoint")
        config = load_dataclass(StudentConfig, metadata.architecture, path="architecture")
        if metadata.voxel_config != voxel:
            raise CheckpointError(f"{path}: voxel = {metadata.voxel}, the student's grid is {voxel}")
        if config.stage_scales != tuple(stage_scales):
            raise CheckpointError(f"{path}: architecture.stage_scales = {list(config.stage_scales)}, the student's"
                                  f" are {list(stage_scales)} (stage features are matched voxel by voxel)")
        network = Student(config, sparse_backend=sparse_backend)
        load_checkpoint(path, network)
        return cls(network)

    def train(self, mode: bool = True) -> LidarTeacher:
        """Always eval mode: the teacher's BatchNorms keep their trained statistics."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, batch: StudentInput) -> StudentOutput:
        return self.network(batch)
