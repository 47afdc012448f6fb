"""A Lightning callback for the DDP-equals-one-process tests: every training batch's loss per process, and
rank 0's weights at the end."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class LossRecorder(Callback):
    """Every training batch's loss, per process, into <dir>/losses_rank<R>.json; rank 0's weights at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        path = self.folder / f"losses_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.losses))
        if trainer.global_rank == 0:
            torch.save({k: v.detach().clone() for k, v in pl_module.named_parameters()}, self.folder / "weights.pt")
