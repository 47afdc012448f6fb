"""U2MKD (uni-to-multi-modal knowledge distillation): a LiDAR-only teacher distils into the fusion student.

* `teacher`: `LidarTeacher`, a frozen LiDAR-only student loaded from a runtime checkpoint;
* `losses`: the imputation loss, the stage-feature distillation loss (cosine distance) and the
  class-weighted logit KL;
* `criterion`: `U2MKD`, the stage-feature projections + the distillation terms of one step;
* `inputs`: a training `Batch` -> the fusion student's `FusionInput`.

The design (what the paper's abstract says, what is this package's) is docs/reference.md §14.
"""
from elite_ros_training.u2mkd.criterion import U2MKD
from elite_ros_training.u2mkd.inputs import fusion_input
from elite_ros_training.u2mkd.losses import class_weighted_kl, feature_distillation_loss, imputation_loss
from elite_ros_training.u2mkd.teacher import LidarTeacher

__all__ = ["LidarTeacher", "U2MKD", "class_weighted_kl", "feature_distillation_loss", "fusion_input", "imputation_loss"]
