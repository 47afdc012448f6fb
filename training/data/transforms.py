"""Rigid transforms and the static TF tree: the runtime's (`elite_ros.transforms`), one home, re-exported here."""
from elite_ros.transforms import (
    ROTATION_TOLERANCE,
    FrameTransform,
    TransformTree,
    invert_rigid,
    matrix_from_quaternion,
    nearest_rotation,
    quaternion_from_matrix,
    rigid_matrix,
    transform_from_msg,
)

__all__ = ["ROTATION_TOLERANCE", "FrameTransform", "TransformTree", "invert_rigid", "matrix_from_quaternion",
           "nearest_rotation", "quaternion_from_matrix", "rigid_matrix", "transform_from_msg"]
