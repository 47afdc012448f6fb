"""PPMSKD (Patch-to-Point Multi-Stage Knowledge Distillation): heads, targets, losses and the criterion.

* `config`: `KDMode` (none / kd / mskd) and `LossConfig` (the weight of every term, docs/reference.md §6);
* `class_weights`: class shares and CE class weights from label counts;
* `losses`: weighted cross-entropy, Lovasz-softmax, the KD divergence (KL, reduction 'mean');
* `targets`: voxel majority labels for the 3D stage heads;
* `heads`: per-stage 3D / 2D heads and the 2D multi-stage classifier (docs/reference.md §4);
* `terms`: `LossTerms` (named weighted terms + total);
* `criterion`: `PPMSKD`, the trainable heads + the criterion of one training step.
"""
from elite_ros_training.ppmskd.class_weights import class_shares, class_weights_from_counts
from elite_ros_training.ppmskd.config import KDMode, LossConfig
from elite_ros_training.ppmskd.criterion import PPMSKD
from elite_ros_training.ppmskd.losses import cross_entropy, kd_divergence, lovasz_softmax, segmentation_loss
from elite_ros_training.ppmskd.targets import voxel_majority_labels
from elite_ros_training.ppmskd.terms import LossTerms

__all__ = ["KDMode", "LossConfig", "LossTerms", "PPMSKD", "class_shares", "class_weights_from_counts", "cross_entropy",
           "kd_divergence", "lovasz_softmax", "segmentation_loss", "voxel_majority_labels"]
