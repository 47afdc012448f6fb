"""`PPMSKD`: the trainable PPMSKD heads and the whole training criterion of one step (docs/reference.md §4, §6).

Total = L_main + sum over distilled stages k of [w3d L3d_k + (seg2d / S) L2d_k + (kd / S) KL_k] + w_multi L2d_multi
(S = number of student stages; the AdaLoRA orthogonal regulariser is added by the caller, `LossTerms.with_term`).

* L_main: CE + 0.1 Lovasz of the student logits against the point labels.
* L3d_k: CE + 1.0 Lovasz of the 3D head on stage k's voxel features against the voxel majority labels.
* L2d_k: CE + Lovasz of the 2D head on teacher stage k against the 2D target: the projected LiDAR labels
  at the projected pixels (`Batch.pixel_labels`), or the dense SAM-PLG pseudo labels over the whole crop
  when the batch has them (`Batch.pseudo_labels`).
* KL_k: KL(teacher || student) with reduction 'mean' at the projected points: student = the 3D head's
  voxel prediction broadcast to the points, teacher = the 2D head's prediction at their pixels, detached.
* L2d_multi: CE + Lovasz of the multi-stage classifier on all teacher stages' features, same 2D target.

Gradient paths: teacher features receive gradients only from L2d_k and L2d_multi; the student only from
L_main, L3d_k and KL_k. `KDMode.KD` distils the last student stage only with the same per-stage weights
(MSKD restricted to the last stage); its multi-stage classifier still sees every teacher stage, so every
patch decoder keeps a gradient. `KDMode.NONE` builds no head at all (nothing untrained for DDP to trip on),
nor does `KDMode.U2MKD` (its LiDAR teacher's terms are `elite_ros_training.u2mkd`'s): both are L_main only.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from elite_ros.labels import NUM_CLASSES
from elite_ros.student import HIDDEN_CHANNELS, STAGE_SCALES, StudentOutput
from elite_ros_training.data.collate import Batch
from elite_ros_training.patch_decoders import gather_pixels
from elite_ros_training.ppmskd.config import KDMode, LossConfig
from elite_ros_training.ppmskd.heads import MultiStageClassifier, stage_head_2d, stage_head_3d
from elite_ros_training.ppmskd.losses import kd_divergence, segmentation_loss
from elite_ros_training.ppmskd.targets import voxel_majority_labels
from elite_ros_training.ppmskd.terms import LossTerms

LOVASZ_2D_WEIGHT = 1.0  # docs/reference.md §6 items 2-3: every 2D loss is CE + Lovasz


class PPMSKD(nn.Module):
    """PPMSKD heads + criterion: `forward(student, batch, teacher_maps) -> LossTerms`.

    class_weights: (num_classes,) CE weights (`class_weights_from_counts`), kept as a non-persistent
    buffer (it follows the module's device; checkpoints carry it in the training hyper-parameters).
    student_channels: channels of `StageFeatures.voxel_features`. teacher_channels: channels Ct of the
    teacher's stage maps (the patch decoders' `out_channels`), required unless `config.kd` is NONE.
    num_stages: student stages, which equals the number of teacher stage maps.
    """

    def __init__(self, config: LossConfig, class_weights: Tensor, *, num_classes: int = NUM_CLASSES,
                 student_channels: int = HIDDEN_CHANNELS, teacher_channels: int | None = None,
                 num_stages: int = len(STAGE_SCALES)) -> None:
        super().__init__()
        weights = torch.as_tensor(class_weights, dtype=torch.float32)
        if weights.shape != (num_classes,):
            raise ValueError(f"PPMSKD: class_weights must have shape ({num_classes},), got {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(f"PPMSKD: class_weights must be finite and >= 0, got {weights.tolist()}")
        if num_stages < 1:
            raise ValueError(f"PPMSKD: num_stages must be >= 1, got {num_stages}")
        self.config = config
        self.num_classes = num_classes
        self.num_stages = num_stages
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.register_buffer("class_weights", weights.clone(), persistent=False)
        if config.kd in (KDMode.NONE, KDMode.U2MKD):  # U2MKD's teacher is a LiDAR one (elite_ros_training.u2mkd)
            stages: tuple[int, ...] = ()
        elif config.kd is KDMode.KD:
            stages = (num_stages - 1,)
        else:
            stages = tuple(range(num_stages))
        #: indices of the student stages that get heads and KD, in order
        self.distilled_stages = stages
        self.heads_3d = nn.ModuleDict()
        self.heads_2d = nn.ModuleDict()
        self.classifier_2d: MultiStageClassifier | None = None
        if stages:
            if teacher_channels is None or teacher_channels < 1:
                raise ValueError(f"PPMSKD: kd={config.kd.value} needs teacher_channels (the teacher's"
                                 f" out_channels), got {teacher_channels}")
            for k in stages:
                self.heads_3d[str(k)] = stage_head_3d(student_channels, num_classes)
                self.heads_2d[str(k)] = stage_head_2d(teacher_channels, num_classes)
            self.classifier_2d = MultiStageClassifier(teacher_channels, num_stages, num_classes)

    def forward(self, student: StudentOutput, batch: Batch, teacher_maps: Sequence[Tensor] | None = None) -> LossTerms:
        """Every weighted loss term of one step (names in `LossTerms`).

        teacher_maps: per stage (B, Ct, H, W) dense teacher features over the crop ((H, W) =
        `batch.image_size`), None when `config.kd` is NONE (and only then).
        """
        self._check_student(student, batch)
        config = self.config
        terms: dict[str, Tensor] = {}
        ce, lovasz = segmentation_loss(student.logits, batch.labels, self.class_weights, config.main_lovasz_weight)
        terms["main_ce"], terms["main_lovasz"] = ce, lovasz
        if not self.distilled_stages:
            if teacher_maps is not None:
                raise ValueError("PPMSKD: kd=none trains the student alone, teacher_maps must be None")
            return LossTerms.from_terms(terms)
        if teacher_maps is None:
            raise ValueError(f"PPMSKD: kd={config.kd.value} needs the teacher's stage maps, got None")
        teacher_maps = list(teacher_maps)
        self._check_teacher_maps(teacher_maps, batch)

        dense = batch.pseudo_labels is not None
        sampled = None
        if dense:
            # per-pixel heads over the whole crop: (B, Ct, H, W) -> (B*H*W, Ct) rows, pixel-major
            features = [stage.permute(0, 2, 3, 1).reshape(-1, stage.shape[1]) for stage in teacher_maps]
            target_2d = batch.pseudo_labels.reshape(-1)
            if config.dense_pixels_per_image is not None:
                sampled = sample_labelled_pixels(batch.pseudo_labels, config.dense_pixels_per_image)
                features = [rows.index_select(0, sampled) for rows in features]
                target_2d = target_2d.index_select(0, sampled)
        else:
            # sparse labels: the heads run on the Ni projected pixels only
            features = [gather_pixels(stage, batch.pixels) for stage in teacher_maps]
            target_2d = batch.pixel_labels
        projected = batch.point_to_pixel_global().to(student.logits.device)

        stage_2d_weight = config.seg2d_weight / self.num_stages
        stage_kd_weight = config.kd_weight / self.num_stages
        for k in self.distilled_stages:
            stage = student.stages[k]
            logits_3d = self.heads_3d[str(k)](stage.voxel_features)  # (M_k, C)
            voxel_labels = voxel_majority_labels(batch.labels, stage.point_to_voxel, logits_3d.shape[0],
                                                 self.num_classes)
            ce, lovasz = segmentation_loss(logits_3d, voxel_labels, self.class_weights, config.stage_lovasz_weight)
            terms[f"stage{k}_3d"] = config.stage_3d_weight * (ce + lovasz)

            logits_2d = self.heads_2d[str(k)](features[k])  # (Ni, C) or (B*H*W, C)
            ce, lovasz = segmentation_loss(logits_2d, target_2d, self.class_weights, LOVASZ_2D_WEIGHT)
            terms[f"stage{k}_2d"] = stage_2d_weight * (ce + lovasz)

            student_points = logits_3d.index_select(0, stage.point_to_voxel.index_select(0, projected))
            if sampled is not None:  # the head at the projected pixels, which the sample may have missed
                teacher_points = self.heads_2d[str(k)](gather_pixels(teacher_maps[k], batch.pixels))
            elif dense:
                b, _, height, width = teacher_maps[k].shape
                teacher_points = gather_pixels(logits_2d.view(b, height, width, -1).permute(0, 3, 1, 2), batch.pixels)
            else:
                teacher_points = logits_2d
            terms[f"stage{k}_kd"] = stage_kd_weight * kd_divergence(student_points, teacher_points)

        assert self.classifier_2d is not None  # built whenever a stage is distilled
        ce, lovasz = segmentation_loss(self.classifier_2d(features), target_2d, self.class_weights, LOVASZ_2D_WEIGHT)
        terms["multi_2d"] = config.multi2d_weight * (ce + lovasz)
        return LossTerms.from_terms(terms)

    def _check_student(self, student: StudentOutput, batch: Batch) -> None:
        num_points = batch.labels.shape[0]
        if batch.labels.ndim != 1 or student.logits.shape != (num_points, self.num_classes):
            raise ValueError(f"PPMSKD: student logits {tuple(student.logits.shape)} do not match the batch's"
                             f" {tuple(batch.labels.shape)} labels and {self.num_classes} classes")
        if len(student.stages) != self.num_stages:
            raise ValueError(f"PPMSKD: the student has {len(student.stages)} stages, expected {self.num_stages}")
        for k in self.distilled_stages:
            stage = student.stages[k]
            features = stage.voxel_features
            if features.ndim != 2 or features.shape[1] != self.student_channels:
                raise ValueError(f"PPMSKD: stage {k} voxel features must be (M, {self.student_channels}),"
                                 f" got {tuple(features.shape)}")
            if stage.point_to_voxel.shape != (num_points,):
                raise ValueError(f"PPMSKD: stage {k} point_to_voxel must be ({num_points},),"
                                 f" got {tuple(stage.point_to_voxel.shape)}")

    def _check_teacher_maps(self, teacher_maps: list[Tensor], batch: Batch) -> None:
        if len(teacher_maps) != self.num_stages:
            raise ValueError(f"PPMSKD: {len(teacher_maps)} teacher stage maps, expected {self.num_stages}")
        expected = (batch.batch_size, self.teacher_channels)
        shapes = {tuple(stage.shape) for stage in teacher_maps}
        if len(shapes) != 1 or any(len(s) != 4 or s[:2] != expected for s in shapes):
            raise ValueError(f"PPMSKD: teacher maps must all be (B={expected[0]}, Ct={expected[1]}, H, W),"
                             f" got {sorted(shapes)}")
        _, _, height, width = teacher_maps[0].shape
        if batch.image_size is not None and tuple(batch.image_size) != (height, width):
            raise ValueError(f"PPMSKD: teacher maps are {height}x{width}, the batch's crop is"
                             f" {batch.image_size[0]}x{batch.image_size[1]}")
        if len(batch.pixels) != batch.batch_size or len(batch.point_to_pixel) != batch.batch_size:
            raise ValueError(f"PPMSKD: the batch has {len(batch.pixels)} pixel lists for {batch.batch_size} samples")
        projected = sum(int(p.shape[0]) for p in batch.point_to_pixel)
        if sum(int(p.shape[0]) for p in batch.pixels) != projected or batch.pixel_labels.shape != (projected,):
            raise ValueError(f"PPMSKD: pixels, point_to_pixel and pixel_labels disagree on the projected points"
                             f" ({[tuple(p.shape) for p in batch.pixels]}, {projected},"
                             f" {tuple(batch.pixel_labels.shape)})")
        if batch.pseudo_labels is not None and tuple(batch.pseudo_labels.shape) != (batch.batch_size, height, width):
            raise ValueError(f"PPMSKD: pseudo labels {tuple(batch.pseudo_labels.shape)} do not cover the"
                             f" {batch.batch_size} x {height} x {width} teacher maps")


def sample_labelled_pixels(labels: Tensor, per_image: int) -> Tensor:
    """Flat indices into ``labels.reshape(-1)`` of up to `per_image` labelled (non-zero) pixels per image,
    drawn uniformly without replacement from torch's global generator (seeded by the run).

    labels: (B, H, W) int64 dense labels. Returns (S,) int64, S <= B * per_image, sorted.
    """
    batch, height, width = labels.shape
    chosen = []
    for b in range(batch):
        candidates = torch.nonzero(labels[b].reshape(-1) > 0).flatten()
        if candidates.numel() > per_image:
            candidates = candidates[torch.randperm(candidates.numel(), device=labels.device)[:per_image]]
        chosen.append(candidates + b * height * width)
    return torch.sort(torch.cat(chosen)).values
