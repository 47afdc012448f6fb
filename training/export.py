"""A Lightning training checkpoint -> the runtime's student checkpoint (safetensors + JSON metadata).

The exported file holds exactly the student's tensors (the teacher and the PPMSKD heads are
training-only, docs/reference.md §3; for the fusion student, §14, its 3D and image branches and the
fusion, without the LiDAR teacher and the U2MKD projections) and metadata saying what it is: the model
kind and, for the fusion student, its camera input (the pipeline's pixel normalisation); ``trained: true``; class names,
palette and learning map; the voxel grid and the intensity scale the network was trained with; the full
training config, the data it saw, its validation mIoU and per-class IoU, the epoch and step, and the
source commit. The Lightning file is read with ``weights_only=True``: nothing in it is executed.

With ``data.target_class_counts`` in the training config, the classifier's output biases are offset by
the label-shift correction from the training frames' class shares to those counts (`label_shift`); the
offsets and the target counts go into the metadata (``training.label_shift``; the training frames'
counts are in ``training.data.class_counts``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from elite_ros.camera import CameraInput
from elite_ros.checkpoint import KITTI_INTENSITY_SCALE, make_metadata, save_checkpoint, source_commit
from elite_ros.config_loader import ConfigError, dump_dataclass
from elite_ros.fusion import FusionConfig, FusionStudent
from elite_ros.student import Student
from elite_ros_training.config import TrainConfig, config_from_mapping
from elite_ros_training.label_shift import add_logit_offsets, label_shift_offsets
from elite_ros_training.module import RUN_KEY, STUDENT_PREFIX, student_state_dict
from elite_ros_training.synthetic.drives import only_these_drives


class ExportError(ValueError):
    """A file that is not a training checkpoint of this package; the message names the file."""


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint of `ELiTeModule` as a plain dict (weights_only: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such training checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling / zip failure means "not ours"
        raise ExportError(f"{path}: not a readable Lightning checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ExportError(f"{path}: not a Lightning checkpoint (no state_dict)")
    if "config" not in checkpoint.get("hyper_parameters", {}):
        raise ExportError(f"{path}: not an elite_ros training checkpoint (no training config in hyper_parameters)")
    return checkpoint


def checkpoint_config(checkpoint: dict[str, Any], source: str = "checkpoint") -> TrainConfig:
    """The TrainConfig a training checkpoint was made with."""
    try:
        return config_from_mapping(checkpoint["hyper_parameters"]["config"])
    except ConfigError as error:
        raise ExportError(f"{source}: its training config does not load here ({error})") from None


def student_from_checkpoint(checkpoint: dict[str, Any],
                            source: str = "checkpoint") -> tuple[Student | FusionStudent, TrainConfig]:
    """The trained student (eval mode, CPU, fp32; the fusion student for a fusion config) and the config of a
    training checkpoint."""
    config = checkpoint_config(checkpoint, source)
    fusion = config.student.fusion
    student: Student | FusionStudent = (
        Student(config.student.architecture) if fusion is None
        else FusionStudent(FusionConfig(lidar=config.student.architecture, image=fusion)))
    state = student_state_dict(checkpoint["state_dict"])
    if not state:
        raise ExportError(f"{source}: no '{STUDENT_PREFIX}*' tensors in its state_dict")
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(f"{source}: student tensors do not fit its config: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    return student.eval(), config


def export_student(source: str | Path, out: str | Path, *, half: bool = False, label_shift: bool = True) -> Path:
    """Write the student of training checkpoint `source` to `out` (.safetensors), atomically.

    half: store the floating-point tensors as float16 (half the file; the runtime upcasts on loading).
    label_shift: apply the config's ``data.target_class_counts`` correction (False: the network as trained).
    """
    source, out = Path(source), Path(out)
    if out.suffix != ".safetensors":
        raise ExportError(f"{out}: the output must be a .safetensors file")
    if out.resolve() == source.resolve():
        raise ExportError(f"{out}: refusing to overwrite the input checkpoint")
    checkpoint = read_training_checkpoint(source)
    student, config = student_from_checkpoint(checkpoint, str(source))
    run = checkpoint.get(RUN_KEY, {})
    training = {
        "config": dump_dataclass(config),
        "data": run.get("data", {"train": list(config.data.train), "val": list(config.data.val)}),
        "val_miou": run.get("val_miou"),
        "val_iou": run.get("val_iou", {}),
        **({"val_miou_no_image": run.get("val_miou_no_image")} if config.student.fusion is not None else {}),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "lightning_checkpoint": source.name,
        "trained_by": "elite-ros-train fit",
        "storage": "float16" if half else "float32",
    }
    if config.data.synthetic is not None and only_these_drives(config.data.synthetic, config.data.train):
        training["data_licence"] = "synthetic world only (elite-ros-train synth): no KITTI data"
    if label_shift and config.data.target_class_counts is not None:
        train_counts = training["data"].get("class_counts")
        if train_counts is None:
            raise ExportError(f"{source}: data.target_class_counts is set, but the run recorded no class counts of "
                              "its training frames (trained by an older elite_ros); export it without the "
                              "correction (--no-label-shift) or retrain")
        offsets = label_shift_offsets(train_counts, config.data.target_class_counts)
        add_logit_offsets(student, offsets)
        training["label_shift"] = {"target_class_counts": list(config.data.target_class_counts),
                                   "logit_offsets": [round(float(v), 6) for v in offsets]}
        if "data_licence" in training:
            training["data_licence"] += ("; output biases shifted to the class shares of "
                                         "training.label_shift.target_class_counts (aggregate counts only)")
    camera = {}
    if config.student.fusion is not None:
        pipeline = config.data.pipeline
        camera["camera"] = dump_dataclass(CameraInput(pixel_mean=pipeline.pixel_mean, pixel_std=pipeline.pixel_std))
    metadata = make_metadata(student, **camera, voxel=dump_dataclass(config.student.voxel),
                             intensity_scale=KITTI_INTENSITY_SCALE, training=training, trained=True,
                             source_commit=run.get("source_commit", source_commit()))
    if half:
        student = student.half()
    return save_checkpoint(out, student, metadata)
