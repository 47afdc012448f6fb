"""The ELiTe training step as a LightningModule: student (+ camera teacher) -> PPMSKD losses -> SGD.

What one optimiser step does (docs/reference.md §5-§7):
1. the student runs on the batch's points (voxelised on the fly with the checkpoint's grid); with a
   teacher, SAM's encoder + patch decoders run on the batch's crops;
2. `PPMSKD` computes every loss term; the AdaLoRA orthogonal regulariser (0.1 x, ref §5) is added for an
   AdaLoRA teacher; every term is logged under ``train/``;
3. after backward (`on_before_optimizer_step`, before clipping and the step): a non-finite gradient
   anywhere skips the update (every gradient is dropped, so SGD moves nothing: no momentum, no weight
   decay; ref §7 zeroes them instead, which still applies both); otherwise AdaLoRA's importance update
   and rank masking run (`update_and_allocate`, it reads the gradients: ref §5);
4. gradient-norm clipping (Lightning, `optim.grad_clip_norm`), SGD + Nesterov, the per-step cosine.

Validation: the student alone on unaugmented scans; argmax per point; one confusion matrix per process,
summed across processes at the end of the epoch (`elite_ros.metrics`), then IoU: ``val/mIoU`` and
``val/iou/<class>``.

The U2MKD fusion student (`student.fusion`, docs/reference.md §14) is the same loop with another model:
its step adds the imputation loss (imputed vs real image features of the points with a pixel) and, with
``loss.kd: u2mkd``, the LiDAR teacher's terms (`elite_ros_training.u2mkd`); it validates with the images
(``val/mIoU``) and with every image withheld (``val/mIoU_no_image``).
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from elite_ros.checkpoint import load_checkpoint, source_commit
from elite_ros.config_loader import dump_dataclass
from elite_ros.fusion import FusionConfig, FusionOutput, FusionStudent
from elite_ros.labels import CLASS_NAMES
from elite_ros.metrics import confusion_matrix, iou_per_class, mean_iou, sum_across_processes
from elite_ros.student import Student, StudentInput, StudentOutput
from elite_ros.voxel import MultiScaleVoxels, voxelise
from elite_ros_training.config import TrainConfig, config_from_mapping
from elite_ros_training.data.collate import Batch
from elite_ros_training.ppmskd import PPMSKD, KDMode, LossTerms
from elite_ros_training.teacher import ImageTeacher, build_teacher
from elite_ros_training.u2mkd import U2MKD, LidarTeacher, fusion_input, imputation_loss

STUDENT_PREFIX = "student."  # where the student's weights sit in the module's state dict (export reads it)
RUN_KEY = "elite_ros"  # the Lightning checkpoint's entry with this run's validation figures and data


def cosine_factor(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Learning-rate factor at optimiser step `step` (0-based): linear warm-up over `warmup_steps`, then
    0.5 (1 + cos(pi t)) with t the fraction of the remaining steps done; 0 at the end (ref §7)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def has_non_finite_gradient(parameters) -> bool:
    """True when any gradient holds a NaN or an infinity."""
    return any(p.grad is not None and not torch.isfinite(p.grad).all() for p in parameters)


def build_student(config: TrainConfig) -> Student | FusionStudent:
    """The config's student (the fusion student when `student.fusion` is set), its 3D part loaded from
    `student.init_checkpoint` (a LiDAR-only runtime checkpoint, strictly) when one is named."""
    section = config.student
    student: Student | FusionStudent
    if section.fusion is not None:
        student = FusionStudent(FusionConfig(lidar=section.architecture, image=section.fusion),
                                sparse_backend=section.sparse_backend)
    else:
        student = Student(section.architecture, sparse_backend=section.sparse_backend)
    if section.init_checkpoint is not None:
        load_checkpoint(section.init_checkpoint, student.lidar if isinstance(student, FusionStudent) else student)
    return student


class ELiTeModule(L.LightningModule):
    """Student, optional teacher and PPMSKD heads of one `TrainConfig`.

    config: the TrainConfig as plain values (`dump_dataclass`), so Lightning checkpoints stay loadable with
    ``weights_only=True``. class_weights: (20,) CE weights (`ppmskd.class_weights_from_counts`).
    total_steps: optimiser steps of the run (cosine length, AdaLoRA budget). world_size: processes (for the
    reference's multi-GPU warm-up).
    """

    def __init__(self, config: dict[str, Any], class_weights: list[float], total_steps: int,
                 world_size: int = 1, data: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_summary = dict(data or {})
        self.commit = source_commit()
        self.config: TrainConfig = config_from_mapping(config)
        self.total_steps = int(total_steps)
        self.world_size = int(world_size)
        cfg = self.config
        self.student = build_student(cfg)
        self.teacher: ImageTeacher | None = None
        if cfg.teacher is not None:
            teacher = cfg.teacher
            self.teacher = build_teacher(teacher.encoder, mode=teacher.mode, decoder=teacher.decoder,
                                         checkpoint=teacher.checkpoint, total_step=max(3, self.total_steps),
                                         pooled_channels=teacher.pooled_channels)
        self.ppmskd = PPMSKD(cfg.loss, torch.tensor(class_weights, dtype=torch.float32),
                             num_classes=cfg.student.architecture.num_classes,
                             student_channels=cfg.student.architecture.hidden_channels,
                             teacher_channels=None if self.teacher is None else self.teacher.out_channels,
                             num_stages=len(cfg.student.architecture.stage_scales))
        self.lidar_teacher: LidarTeacher | None = None
        self.u2mkd: U2MKD | None = None
        if cfg.loss.kd is KDMode.U2MKD:
            assert cfg.lidar_teacher is not None  # TrainConfig's rule
            if cfg.lidar_teacher.checkpoint is None:
                raise ValueError("loss.kd u2mkd: no LiDAR teacher checkpoint (set lidar_teacher.checkpoint or pass "
                                 "--teacher-checkpoint)")
            architecture = cfg.student.architecture
            self.lidar_teacher = LidarTeacher.from_checkpoint(cfg.lidar_teacher.checkpoint, cfg.student.voxel,
                                                              architecture.stage_scales, cfg.student.sparse_backend)
            self.u2mkd = U2MKD(cfg.loss, student_channels=architecture.hidden_channels,
                               teacher_channels=self.lidar_teacher.config.hidden_channels,
                               num_stages=len(architecture.stage_scales), num_classes=architecture.num_classes,
                               class_weights=self.ppmskd.class_weights)
        num_classes = cfg.student.architecture.num_classes
        self.register_buffer("val_confusion", torch.zeros(num_classes, num_classes, dtype=torch.int64),
                             persistent=False)
        self.register_buffer("val_confusion_no_image", torch.zeros(num_classes, num_classes, dtype=torch.int64),
                             persistent=False)
        self.skipped_steps = 0
        self.last_val_miou: float | None = None
        self.last_val_iou: dict[str, float | None] = {}
        self.last_val_miou_no_image: float | None = None

    @property
    def is_fusion(self) -> bool:
        return isinstance(self.student, FusionStudent)

    @classmethod
    def from_config(cls, config: TrainConfig, class_weights: list[float], total_steps: int,
                    world_size: int = 1, data: dict[str, Any] | None = None) -> ELiTeModule:
        return cls(dump_dataclass(config), class_weights, total_steps, world_size, data)

    # ------------------------------------------------------------------------------------------ forward
    def voxelise(self, batch: Batch) -> MultiScaleVoxels:
        """The batch's points voxelised on the student's grid (on the batch's device)."""
        return voxelise(batch.points[:, :3], batch.batch_index, batch.batch_size, self.config.student.voxel)

    def student_forward(self, batch: Batch, voxels: MultiScaleVoxels | None = None, *,
                        with_images: bool = True) -> StudentOutput:
        """The student on the batch's points (and, for the fusion student, its images unless `with_images`
        is False: the imputation path for every point)."""
        voxels = self.voxelise(batch) if voxels is None else voxels
        if isinstance(self.student, FusionStudent):
            return self.student(fusion_input(batch, voxels, with_images=with_images))
        return self.student(StudentInput(points=batch.points, voxels=voxels))

    def losses(self, batch: Batch) -> LossTerms:
        """Every loss term of one training batch (and the AdaLoRA regulariser)."""
        voxels = self.voxelise(batch)
        student = self.student_forward(batch, voxels)
        teacher_maps = None
        if self.teacher is not None:
            if batch.images is None:
                raise ValueError(f"the teacher needs images, batch {batch.frame_ids} has none")
            teacher_maps = self.teacher(batch.images, valid_hw=batch.image_size)
        terms = self.ppmskd(student, batch, teacher_maps)
        if self.teacher is not None:
            terms = terms.with_term("orth", self.teacher.regularization_loss())
        if isinstance(student, FusionOutput):
            terms = self._fusion_terms(terms, student, batch, voxels)
        return terms

    def _fusion_terms(self, terms: LossTerms, student: FusionOutput, batch: Batch,
                      voxels: MultiScaleVoxels) -> LossTerms:
        """The fusion student's own terms: imputation (where the batch has images), U2MKD (kd u2mkd)."""
        if student.imputed is not None and student.image_features is not None:
            terms = terms.with_term("imputation", self.config.loss.imputation_weight
                                    * imputation_loss(student.imputed, student.image_features))
        if self.u2mkd is not None and self.lidar_teacher is not None:
            teacher = self.lidar_teacher(StudentInput(points=batch.points, voxels=voxels))
            for name, value in self.u2mkd(student, teacher, batch.labels).items():
                terms = terms.with_term(name, value)
        # Every trainable parameter takes part in every step, also when a batch leaves the image path unused
        # (all its images withheld, or no point in view): a zero-weighted sum, so DDP needs no search for
        # unused parameters and all processes reduce the same gradients.
        anchor = sum(p.sum() for p in self.student.parameters() if p.requires_grad)
        return LossTerms(terms=terms.terms, total=terms.total + 0.0 * anchor)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        terms = self.losses(batch)
        size = batch.batch_size
        for name, value in terms.terms.items():
            self.log(f"train/{name}", value.detach(), batch_size=size)
        self.log("train/loss", terms.total.detach(), batch_size=size, prog_bar=True)
        return terms.total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        parameters = [p for p in self.parameters() if p.requires_grad]
        if has_non_finite_gradient(parameters):
            for p in parameters:
                p.grad = None  # SGD leaves a parameter without gradient untouched: the update is skipped
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps), batch_size=1)
            return
        if self.teacher is not None:
            self.teacher.update_and_allocate(self.global_step)

    # ------------------------------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self.val_confusion.zero_()
        self.val_confusion_no_image.zero_()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        num_classes = self.config.student.architecture.num_classes
        voxels = self.voxelise(batch)
        logits = self.student_forward(batch, voxels).logits
        self.val_confusion += confusion_matrix(batch.labels, logits.argmax(dim=1), num_classes)
        if self.is_fusion:
            blind = self.student_forward(batch, voxels, with_images=False).logits
            self.val_confusion_no_image += confusion_matrix(batch.labels, blind.argmax(dim=1), num_classes)

    def on_validation_epoch_end(self) -> None:
        total = sum_across_processes(self.val_confusion)
        iou = iou_per_class(total)
        miou = mean_iou(iou)
        # identical on every process after the sum: no further reduction
        self.log("val/mIoU", miou, batch_size=1, prog_bar=True)
        for name, value in zip(CLASS_NAMES[1:], iou):
            self.log(f"val/iou/{name}", float(value), batch_size=1)
        self.last_val_miou = None if math.isnan(miou) else miou
        self.last_val_iou = {name: None if math.isnan(v) else float(v) for name, v in zip(CLASS_NAMES[1:], iou)}
        if self.is_fusion:
            blind = mean_iou(iou_per_class(sum_across_processes(self.val_confusion_no_image)))
            self.log("val/mIoU_no_image", blind, batch_size=1)
            self.last_val_miou_no_image = None if math.isnan(blind) else blind

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What `export` writes into the runtime checkpoint's metadata: the latest validation figures
        (of the epoch this checkpoint closes), the data seen and the source commit."""
        checkpoint[RUN_KEY] = {"val_miou": self.last_val_miou, "val_iou": self.last_val_iou,
                               "data": self.data_summary, "source_commit": self.commit,
                               "skipped_steps": self.skipped_steps}
        if self.is_fusion:
            checkpoint[RUN_KEY]["val_miou_no_image"] = self.last_val_miou_no_image

    # ------------------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.config.optim
        parameters = [p for p in self.parameters() if p.requires_grad]
        if optim.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                parameters, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov,
                weight_decay=optim.weight_decay)
        else:
            optimizer = torch.optim.AdamW(parameters, lr=optim.lr, weight_decay=optim.weight_decay)
        warmup = optim.warmup_for(self.world_size)
        if optim.schedule == "cosine":
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: cosine_factor(step, self.total_steps, warmup))
        else:
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def student_state_dict(module_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The student's own state dict out of the module's (keys without the ``student.`` prefix)."""
    return {key[len(STUDENT_PREFIX):]: value for key, value in module_state.items() if key.startswith(STUDENT_PREFIX)}


def recalibrate_batch_norm(student: nn.Module, batches, device: torch.device, voxel_config,
                           forward=None) -> int:
    """Replace every BatchNorm's running statistics of `student` by exact means over `batches`.

    Running averages with momentum 0.1 over small batches are noisy; this runs the student in training
    mode without gradients over the batches with cumulative averaging (momentum None) and restores the
    momenta. forward: batch -> the student's output (e.g. `ELiTeModule.student_forward`, which also feeds
    a fusion student its images); None = the LiDAR student on the batch's points. Returns the number of
    batches used.
    """
    norms = [m for m in student.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = student.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    student.train()
    used = 0
    try:
        with torch.no_grad():
            for batch in batches:
                batch = batch.to(device)
                if forward is not None:
                    forward(batch)
                else:
                    voxels = voxelise(batch.points[:, :3], batch.batch_index, batch.batch_size, voxel_config)
                    student(StudentInput(points=batch.points, voxels=voxels))
                used += 1
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        student.train(was_training)
    return used
