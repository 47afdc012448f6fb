"""Run a training: a `TrainConfig` -> Lightning Trainer (DDP when several processes) -> checkpoints and logs.

Where things go: ``<trainer.out_dir>/<trainer.name>/version_<N>/`` holds the TensorBoard events,
``csv/metrics.csv`` and ``checkpoints/`` with ``best-epochEEE-miouX.XXXX.ckpt`` (highest val/mIoU) and
``last.ckpt`` (end of the latest epoch). Checkpoints are written atomically (temp file + rename), at the
end of every epoch. Resuming (`resume=`) restarts from the end of that checkpoint's epoch; as the batches
of an epoch are fixed by (seed, epoch, index), the resumed run computes the same steps as an
uninterrupted one. A run killed mid-epoch loses that epoch's steps since the last checkpoint: they are
recomputed, identically, after the resume.

Distribution is Lightning's DDP (gloo on the CPU, NCCL on GPUs): `devices` processes per node and
`num_nodes` nodes, started by Lightning itself, by torchrun or by SLURM (Lightning reads their
environment). No process management here.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from elite_ros.atomic import atomic_file
from elite_ros.device import cpu_supports_precision
from elite_ros_training.config import TrainConfig
from elite_ros_training.datamodule import ELiTeDataModule
from elite_ros_training.module import ELiTeModule, recalibrate_batch_norm
from elite_ros_training.ppmskd import class_weights_from_counts
from elite_ros_training.synthetic.drives import render_drives

LOG = logging.getLogger(__name__)
MONITOR = "val/mIoU"
LAST = "last"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary sibling and renamed: a kill never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_file(path) as temp:
            torch.save(checkpoint, temp)


class BatchNormRecalibration(Callback):
    """Before the last epoch's validation: exact BatchNorm statistics over `batches` training batches
    (per process, then averaged across processes), so the final checkpoints carry them."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.done = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.done or trainer.sanity_checking or trainer.current_epoch != trainer.max_epochs - 1:
            return
        assert isinstance(pl_module, ELiTeModule)
        loader = trainer.datamodule.train_dataloader()
        batches = (batch for _, batch in zip(range(self.batches), loader))
        used = recalibrate_batch_norm(pl_module.student, batches, pl_module.device, pl_module.config.student.voxel,
                                      forward=pl_module.student_forward)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for buffer in _running_statistics(pl_module.student):
                torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
                buffer /= trainer.world_size
        pl_module.student.eval()
        self.done = True
        LOG.info("BatchNorm statistics recomputed over %d training batches", used)


def _running_statistics(module: torch.nn.Module) -> list[torch.Tensor]:
    return [buffer for norm in module.modules() if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm)
            for buffer in (norm.running_mean, norm.running_var) if buffer is not None]


@dataclass(frozen=True)
class FitResult:
    """Where a finished run left its outputs; best_miou None without validation data."""

    log_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path
    best_miou: float | None
    global_step: int


def find_last_checkpoint(config: TrainConfig) -> Path:
    """The newest ``last.ckpt`` of the run name (for ``--resume last``)."""
    root = Path(config.trainer.out_dir) / config.trainer.name
    found = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--resume last: no {root}/version_*/checkpoints/last.ckpt")
    return found[-1]


def _version_of(checkpoint: Path) -> int | None:
    """The logger version a checkpoint under version_N/checkpoints/ belongs to (its logs continue there)."""
    parent = checkpoint.resolve().parent
    if parent.name == "checkpoints" and parent.parent.name.startswith("version_"):
        try:
            return int(parent.parent.name.removeprefix("version_"))
        except ValueError:
            return None
    return None


class RunProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar with ``v_num`` = the run's version_N: with a TensorBoard and a CSV logger
    Lightning joins both versions ("0_csv") and shows the last four characters, "_csv"."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        if trainer.loggers:
            items["v_num"] = trainer.loggers[0].version
        return items


def build_trainer(config: TrainConfig, *, accelerator: str = "auto", devices: int = 1, num_nodes: int = 1,
                  progress: bool = True, version: int | None = None, has_validation: bool = True,
                  extra_callbacks: list[Callback] | None = None, **trainer_options: Any) -> L.Trainer:
    """The Lightning Trainer of a config: loggers, checkpoints, clipping, DDP; `trainer_options` override."""
    trainer_cfg = config.trainer
    tensorboard = TensorBoardLogger(trainer_cfg.out_dir, name=trainer_cfg.name, version=version,
                                    default_hp_metric=False)
    # metrics.csv in version_N/csv/ (a resumed run starts its own csv_resumed_<time>/: the CSV logger
    # would otherwise replace the file of the run it continues)
    csv_folder = "csv" if version is None else time.strftime("csv_resumed_%Y%m%d-%H%M%S")
    csv = CSVLogger(tensorboard.log_dir, name="", version=csv_folder)
    checkpoints = Path(tensorboard.log_dir) / "checkpoints"
    checkpoint = ModelCheckpoint(
        dirpath=checkpoints, save_last=True, every_n_epochs=1,
        **({"monitor": MONITOR, "mode": "max", "save_top_k": 1, "auto_insert_metric_name": False,
            "filename": "best-epoch{epoch:03d}-miou{val/mIoU:.4f}"} if has_validation
           else {"save_top_k": 1, "filename": "epoch{epoch:03d}", "auto_insert_metric_name": False}))
    callbacks: list[Callback] = [checkpoint, LearningRateMonitor(logging_interval="step")]
    if progress:
        callbacks.append(RunProgressBar(refresh_rate=1))
    if trainer_cfg.bn_recalibration_batches > 0:
        callbacks.append(BatchNormRecalibration(trainer_cfg.bn_recalibration_batches))
    callbacks += extra_callbacks or []
    multi = devices > 1 or num_nodes > 1
    options: dict[str, Any] = dict(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes,
        strategy="ddp" if multi else "auto",
        max_epochs=trainer_cfg.max_epochs, max_steps=trainer_cfg.max_steps or -1,
        precision=trainer_cfg.precision, check_val_every_n_epoch=trainer_cfg.check_val_every_n_epoch,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        accumulate_grad_batches=trainer_cfg.accumulate_grad_batches,
        gradient_clip_val=config.optim.grad_clip_norm, gradient_clip_algorithm="norm",
        deterministic=trainer_cfg.deterministic, logger=[tensorboard, csv], callbacks=callbacks,
        plugins=[AtomicCheckpointIO()], enable_progress_bar=progress, use_distributed_sampler=False,
        num_sanity_val_steps=0, enable_model_summary=progress)
    options.update(trainer_options)
    return L.Trainer(**options)


def with_synthetic_data(config: TrainConfig, progress: bool = True) -> TrainConfig:
    """`config` with its synthetic drives (rendered under <out_dir>/synthetic/ if missing) as train / val
    data, when it names synthetic drives and no other data."""
    drives = config.data.synthetic
    if drives is None or config.data.train:
        return config
    train, val = render_drives(drives, Path(config.trainer.out_dir) / "synthetic", progress)
    data = replace(config.data, train=tuple(map(str, train)), val=config.data.val or tuple(map(str, val)))
    return replace(config, data=data)


def with_precision_for_this_cpu(config: TrainConfig, accelerator: str) -> TrainConfig:
    """`config` with fp32 in place of a half precision that a CPU run would only emulate (no AVX512-BF16 /
    AMX units: bf16 autocast measured 44 s against 7.8 s per fp32 step on an AVX2-only EPYC), with a warning.
    The checkpoints' config records the precision the run really used."""
    precision = str(config.trainer.precision)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    half = "bf16" if precision.startswith("bf16") else "fp16" if precision.startswith("16") else None
    if not on_cpu or half is None or cpu_supports_precision(half):
        return config
    LOG.warning("trainer.precision %s: this CPU has no native %s units (it would be emulated, many times slower "
                "than fp32); training in fp32 (32-true)", precision, half)
    return replace(config, trainer=replace(config.trainer, precision="32-true"))


def _leave_process_group() -> None:
    """Tear down the process group of a multi-process run (no-op in one process) once every rank is done.

    Lightning's subprocess DDP leaves it to interpreter exit, where gloo's worker threads can be destroyed
    while still joinable: std::terminate ("terminate called without an active exception", exit -6) after a
    run that finished and saved everything."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def fit(config: TrainConfig, *, accelerator: str = "auto", devices: int = 1, num_nodes: int = 1,
        resume: str | Path | None = None, progress: bool = True, datamodule: ELiTeDataModule | None = None,
        **trainer_options: Any) -> FitResult:
    """Train `config`; `resume` = a Lightning checkpoint of this run ("last": the newest last.ckpt)."""
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    config = with_precision_for_this_cpu(with_synthetic_data(config, progress), accelerator)
    datamodule = datamodule or ELiTeDataModule(config, progress=progress)
    world = devices * num_nodes
    total_steps = datamodule.total_steps(world)
    counts = datamodule.class_counts()
    weights = class_weights_from_counts(counts).tolist()
    # the counts the CE weights come from, into the metadata; export's label-shift correction reads them
    data = {**datamodule.summary(), "class_counts": counts.tolist()}
    module = ELiTeModule.from_config(config, weights, total_steps, world, data=data)
    checkpoint = None
    if resume is not None:
        checkpoint = find_last_checkpoint(config) if str(resume) == LAST else Path(resume)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from: {checkpoint}")
    trainer = build_trainer(config, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                            progress=progress, version=None if checkpoint is None else _version_of(checkpoint),
                            has_validation=datamodule.val_set is not None, **trainer_options)
    trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    callback = trainer.checkpoint_callback
    assert isinstance(callback, ModelCheckpoint)
    best = Path(callback.best_model_path) if callback.best_model_path else None
    score = callback.best_model_score
    result = FitResult(log_dir=Path(trainer.log_dir or "."), best_checkpoint=best,  # log_dir: a broadcast
                       last_checkpoint=Path(callback.dirpath) / f"{LAST}.ckpt",
                       best_miou=None if score is None else float(score), global_step=trainer.global_step)
    _leave_process_group()
    return result
