"""Datasets, KITTI/SemanticKITTI readers, rosbag conversion, augmentation and projection."""
