"""elite_ros_training: the ELiTe teacher-student training module (extra `[train]`)."""
