"""What the PPMSKD criterion computes: the distillation mode and the weight of every loss term.

Defaults are the official code's composition (docs/reference.md §6, §10 item 5). Per-stage 2D and KD
weights are divided by the number of *student* stages inside the criterion (0.25 and 0.0125 for four
stages), also when only the last stage is distilled (`KDMode.KD`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum

MAIN_LOVASZ_WEIGHT = 0.1  # docs/reference.md §6 item 1: student main loss = CE + 0.1 Lovasz
STAGE_LOVASZ_WEIGHT = 1.0  # docs/reference.md §6 item 2: 3D stage loss = CE + 1.0 Lovasz
STAGE_3D_WEIGHT = 1.0  # docs/reference.md §6 item 2 / §10 item 5: not divided by the number of stages
SEG2D_WEIGHT = 1.0  # docs/reference.md §6 item 2: lambda_seg2d, divided by the number of stages (-> 0.25)
KD_WEIGHT = 0.05  # docs/reference.md §6 item 2: lambda_xm, divided by the number of stages (-> 0.0125)
MULTI2D_WEIGHT = 1.0  # docs/reference.md §6 item 3: 2D multi-stage classifier loss, weight 1
IMPUTATION_WEIGHT = 1.0  # docs/reference.md §14 (ours): MSE of imputed vs real image features
U2MKD_LOGIT_WEIGHT = 1.0  # docs/reference.md §14 (ours): KL(LiDAR teacher || fusion student) per point
U2MKD_FEATURE_WEIGHT = 1.0  # docs/reference.md §14 (ours): stage-feature cosine distance, divided by the stages


class KDMode(str, Enum):
    """Which student stages are distilled (docs/reference.md §11, Table II).

    NONE: the student alone, no teacher (row a). KD: the last student stage only (row b), with the same
    per-stage weights as MSKD. MSKD: every student stage (rows c-l). U2MKD: not an image teacher but a
    LiDAR-only one distilling into the fusion student (docs/reference.md §14, `elite_ros_training.u2mkd`).
    """

    NONE = "none"
    KD = "kd"
    MSKD = "mskd"
    U2MKD = "u2mkd"


@dataclass(frozen=True)
class LossConfig:
    """Weights of the PPMSKD loss terms (docs/reference.md §6) and of the fusion student's (§14)."""

    kd: KDMode = KDMode.MSKD
    main_lovasz_weight: float = MAIN_LOVASZ_WEIGHT  # student main loss: CE + 0.1 Lovasz
    stage_lovasz_weight: float = STAGE_LOVASZ_WEIGHT  # 3D stage loss: CE + 1.0 Lovasz
    stage_3d_weight: float = STAGE_3D_WEIGHT  # per distilled stage, not divided by the number of stages
    seg2d_weight: float = SEG2D_WEIGHT  # lambda_seg2d; per stage divided by the number of student stages
    kd_weight: float = KD_WEIGHT  # lambda_xm; per stage divided by the number of student stages
    multi2d_weight: float = MULTI2D_WEIGHT  # 2D multi-stage classifier
    imputation_weight: float = IMPUTATION_WEIGHT  # fusion student: imputed vs real image features
    u2mkd_logit_weight: float = U2MKD_LOGIT_WEIGHT  # kd u2mkd: teacher logits -> student logits
    u2mkd_feature_weight: float = U2MKD_FEATURE_WEIGHT  # kd u2mkd: teacher stage features, over all stages
    #: kd u2mkd: weigh each point's logit KL by the CE class weight of the teacher's label (ours, §14.2;
    #: the plain KL cost pole and car their IoU, §14.4)
    u2mkd_logit_class_weighted: bool = True
    #: kd u2mkd: the logit KL only on the points whose teacher label is the ground truth or that have none
    #: (ours, §14.2: where the teacher is wrong, its KL pulls against the CE; the default since §14.4)
    u2mkd_logit_teacher_right_only: bool = True
    #: dense (pseudo-label) 2D losses on this many labelled pixels drawn at random per image instead of on
    #: every pixel of the crop (None: every pixel, the reference's); ours, for CPU-sized runs
    dense_pixels_per_image: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kd", KDMode(self.kd))
        if self.dense_pixels_per_image is not None and self.dense_pixels_per_image < 1:
            raise ValueError(f"LossConfig.dense_pixels_per_image must be >= 1 or None, got "
                             f"{self.dense_pixels_per_image}")
        for f in fields(self):
            if f.type != "float":  # the weights; the mode, switches and the pixel count are checked apart
                continue
            value = float(getattr(self, f.name))
            if not value >= 0.0 or value == float("inf"):
                raise ValueError(f"LossConfig.{f.name} must be a finite weight >= 0, got {getattr(self, f.name)}")
            object.__setattr__(self, f.name, value)
