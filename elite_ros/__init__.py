"""elite_ros: real-time LiDAR semantic segmentation for ROS 2 (ELiTe student network)."""

__version__ = "0.1.0"
