"""The ELiTe image teacher (SAM ViT encoder + patch decoders), three modules with one job each:

- `encoder`: `TeacherConfig` and `SamTeacherEncoder` (split q/k/v, no neck, token cut, stage taps);
- `sam_weights`: SAM checkpoint keys -> encoder parameters, loaded strictly (`load_sam_encoder_weights`);
- `assembly`: `ImageTeacher` (tuned encoder + decoders) and `build_teacher`.

The public names are importable from here; SAM's input normalisation lives in `elite_ros_training.sam_input`.
"""
from elite_ros_training.sam_input import CROP_SIZE, SAM_PIXEL_MEAN, SAM_PIXEL_STD, normalize_image
from elite_ros_training.teacher.assembly import ImageTeacher, build_teacher
from elite_ros_training.teacher.encoder import (
    LAYER_NORM_EPS,
    RelPosCut,
    SamTeacherEncoder,
    SplitQKVAttention,
    TeacherConfig,
    centre_slice_rel_pos,
)
from elite_ros_training.teacher.sam_weights import (
    ENCODER_PREFIX,
    NECK_PREFIX,
    CheckpointMismatchError,
    LoadReport,
    load_sam_encoder_weights,
    map_sam_encoder_keys,
)

__all__ = [
    "CROP_SIZE", "ENCODER_PREFIX", "LAYER_NORM_EPS", "NECK_PREFIX", "SAM_PIXEL_MEAN", "SAM_PIXEL_STD",
    "CheckpointMismatchError", "ImageTeacher", "LoadReport", "RelPosCut", "SamTeacherEncoder", "SplitQKVAttention",
    "TeacherConfig", "build_teacher", "centre_slice_rel_pos", "load_sam_encoder_weights", "map_sam_encoder_keys",
    "normalize_image",
]
