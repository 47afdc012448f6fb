"""The training configuration: one typed `TrainConfig` per experiment, read from YAML.

    config = load_config("training/configs/row_l.yaml", overrides=["optim.lr=0.1", "trainer.max_epochs=2"])

A YAML file holds any of the seven sections (data, student, teacher, lidar_teacher, loss, optim, trainer);
what it leaves
out takes the defaults below, which are the paper's SemanticKITTI run (docs/reference.md §1, §6, §7).
A file may start from another with ``base: other.yaml`` (a path relative to the file): its mapping is
merged key by key on top of the base (a ``null`` value replaces a whole section, e.g. ``teacher: null``
for the student-only row). ``--set key=value`` overrides (`apply_overrides`) are merged last; the value
is read as YAML (``trainer.max_epochs=2``, ``teacher=null``, ``data.train=[a.mcap, b.mcap]``).
Unknown keys and values of the wrong type are refused naming the key (`elite_ros.config_loader`).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from elite_ros.config_loader import ConfigError, load_dataclass
from elite_ros.fusion import ImageFusionConfig
from elite_ros.student import StudentConfig
from elite_ros.voxel import VoxelConfig
from elite_ros_training.data.pipeline import PipelineConfig
from elite_ros_training.patch_decoders import POOLED_CHANNELS, DecoderKind
from elite_ros_training.peft_modes import TuningMode
from elite_ros_training.ppmskd import KDMode, LossConfig
from elite_ros_training.synthetic.drives import SyntheticDrives
from elite_ros_training.teacher import TeacherConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BASE_KEY = "base"  # a YAML file's parent config

# Optimisation of the paper's run (docs/reference.md §7)
LEARNING_RATE = 0.24  # ref §7: SGD lr
MOMENTUM = 0.9  # ref §7
WEIGHT_DECAY = 1e-4  # ref §7, on every trainable parameter
GRAD_CLIP_NORM = 1.0  # ref §7: gradient_clip_val=1 (norm)
EPOCHS = 64  # ref §7 (default config)
BATCH_SIZE = 4  # ref §7: per GPU, drop_last
VAL_BATCH_SIZE = 8  # ref §8
MULTI_GPU_WARMUP_STEPS = 1000  # ref §7: linear warm-up of 1000 // G steps with G > 1 GPUs, none on one
SEED = 0  # ref §7: pl.seed_everything(0)


@dataclass(frozen=True)
class DataConfig:
    """Where frames come from and how they become batches.

    train / val: SemanticKITTI sequence folders, roots of sequences, or rosbags (`dataset.open_frames`);
    the CLI's --data / --val-data replace them. batch_size is per process (GPU), val_batch_size too.
    synthetic: instead of train / val, drives of the synthetic world (licence-free; the default checkpoint).
    """

    train: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    #: points per training id (20 values) for the class weights of every cross-entropy (ref §6); None =
    #: counted over the in-range points of the training frames when training starts
    class_counts: tuple[int, ...] | None = None
    #: points per training id (20 values) in the data the model will be used on, when its class mix
    #: differs from the training frames' (the synthetic world's): `export` then offsets the classifier's
    #: biases by the label-shift correction (`label_shift.label_shift_offsets`). None = no correction.
    #: Needs class_counts None (the training shares are those counted over the training frames).
    target_class_counts: tuple[int, ...] | None = None
    #: synthetic drives rendered (once, under <trainer.out_dir>/synthetic/) when train / val are empty
    synthetic: SyntheticDrives | None = None
    batch_size: int = BATCH_SIZE
    val_batch_size: int = VAL_BATCH_SIZE
    num_workers: int = 4

    def __post_init__(self) -> None:
        for name in ("batch_size", "val_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        for name in ("class_counts", "target_class_counts"):
            counts = getattr(self, name)
            if counts is not None and any(c < 0 for c in counts):
                raise ValueError(f"{name} must be >= 0, got {list(counts)}")
        if self.target_class_counts is not None and self.class_counts is not None:
            raise ValueError("target_class_counts needs the class shares of the training frames: set "
                             "class_counts to null (counted over the training frames)")


@dataclass(frozen=True)
class StudentSection:
    """The student network and the grid it voxelises on (both travel into the exported checkpoint).

    fusion: the U2MKD fusion student's image branch and fusion (docs/reference.md §14); None = the
    LiDAR-only student. `architecture` is then its 3D branch. init_checkpoint: a LiDAR-only runtime
    checkpoint (.safetensors, `architecture` alike) loaded into the student (its 3D branch) before training.
    """

    architecture: StudentConfig = field(default_factory=StudentConfig)
    voxel: VoxelConfig = field(default_factory=VoxelConfig)
    sparse_backend: str = "auto"  # auto: spconv on CUDA, native on the CPU (spconv has no CPU backward)
    fusion: ImageFusionConfig | None = None
    init_checkpoint: str | None = None


@dataclass(frozen=True)
class LidarTeacherSection:
    """U2MKD's teacher (`loss.kd: u2mkd`, docs/reference.md §14): a LiDAR-only runtime checkpoint of this
    package (`elite-ros-train export`, or bigger) on the student's voxel grid and stage scales. None here
    = given on the command line (`fit --teacher-checkpoint`)."""

    checkpoint: str | None = None


@dataclass(frozen=True)
class TeacherSection:
    """The camera teacher: SAM's ViT image encoder, its tuning mode and the patch decoders (ref §4, §5).

    checkpoint: a SAM checkpoint (e.g. sam_vit_b_01ec64.pth) loaded strictly before tuning; None keeps
    the random initialisation (tests, the synthetic CPU configs: no SAM weights can be downloaded there).
    """

    encoder: TeacherConfig = field(default_factory=TeacherConfig)
    mode: TuningMode = TuningMode.ADALORA
    decoder: DecoderKind = DecoderKind.UPSCALE_INTERPOLATE
    pooled_channels: int = POOLED_CHANNELS
    checkpoint: str | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (ref §7: SGD + Nesterov, per-step cosine to 0)."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = LEARNING_RATE
    momentum: float = MOMENTUM  # SGD only
    nesterov: bool = True  # SGD only
    weight_decay: float = WEIGHT_DECAY
    schedule: Literal["cosine", "constant"] = "cosine"
    #: linear warm-up steps; None = the reference's rule (1000 // world size with more than one process)
    warmup_steps: int | None = None
    grad_clip_norm: float | None = GRAD_CLIP_NORM

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"grad_clip_norm must be > 0 or null, got {self.grad_clip_norm}")

    def warmup_for(self, world_size: int) -> int:
        """Warm-up steps for a run on `world_size` processes."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return MULTI_GPU_WARMUP_STEPS // world_size if world_size > 1 else 0


@dataclass(frozen=True)
class TrainerConfig:
    """How long and where: epochs (or steps), validation, logging, checkpoints, seed, precision.

    out_dir/name/version_N/ holds TensorBoard events, metrics.csv and checkpoints/ (best val mIoU + last).
    bn_recalibration_batches: after the last epoch, recompute the BatchNorm running statistics as exact
    means over this many training batches (0 = off); small-batch runs need it (noisy running averages).
    """

    max_epochs: int = EPOCHS
    max_steps: int | None = None  # None: max_epochs decides
    precision: str = "32-true"  # ref §7: fp32, no AMP
    seed: int = SEED
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    accumulate_grad_batches: int = 1
    out_dir: str = "runs"
    name: str = "elite"
    bn_recalibration_batches: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if self.accumulate_grad_batches < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {self.accumulate_grad_batches}")


@dataclass(frozen=True)
class TrainConfig:
    """One experiment. teacher None = the student alone (ablation row a, `loss.kd` must be none)."""

    data: DataConfig = field(default_factory=DataConfig)
    student: StudentSection = field(default_factory=StudentSection)
    teacher: TeacherSection | None = field(default_factory=TeacherSection)
    lidar_teacher: LidarTeacherSection | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        kd = self.loss.kd
        if kd is KDMode.U2MKD:
            if self.student.fusion is None or self.lidar_teacher is None or self.teacher is not None:
                raise ValueError("loss.kd is 'u2mkd': it needs student.fusion (the fusion student), a lidar_teacher "
                                 "section (its checkpoint) and teacher: null")
        elif self.lidar_teacher is not None:
            raise ValueError(f"a lidar_teacher is configured but loss.kd is {kd.value!r}: set loss.kd: u2mkd")
        elif self.teacher is None and kd is not KDMode.NONE:
            raise ValueError(f"loss.kd is {kd.value!r} but there is no teacher: set loss.kd: none "
                             "or configure a teacher")
        if self.teacher is not None and kd is KDMode.NONE:
            raise ValueError("loss.kd is 'none' but a teacher is configured: set teacher: null for the "
                             "student alone, or loss.kd: kd | mskd")
        if self.student.fusion is not None and self.teacher is not None:
            raise ValueError("student.fusion (the U2MKD fusion student) trains without the SAM teacher: "
                             "set teacher: null (and loss.kd: none or u2mkd)")
        if (self.teacher is not None or self.student.fusion is not None) and not self.data.pipeline.require_image:
            raise ValueError("a teacher or a fusion student needs camera images: data.pipeline.require_image "
                             "must be true")
        volume = (self.data.pipeline.volume_min, self.data.pipeline.volume_max)
        grid = (self.student.voxel.min_bound, self.student.voxel.max_bound)
        if volume != grid:
            raise ValueError(f"data.pipeline volume {volume} differs from the student's voxel grid {grid}")


def config_from_mapping(values: Mapping[str, Any]) -> TrainConfig:
    """A validated TrainConfig from a merged mapping (ConfigError names a bad key)."""
    return load_dataclass(TrainConfig, values)


def read_config_mapping(path: str | Path) -> dict[str, Any]:
    """The merged mapping of a YAML config file and its `base:` chain (without validation)."""
    return _read_with_bases(Path(path), seen=())


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(BASE_KEY, f"{path}: 'base' chain loops back to {resolved.name}")
    if not path.is_file():
        raise ConfigError("", f"no such config file: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError("", f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError("", f"{path}: a config file must hold a mapping, got {type(values).__name__}")
    base_name = values.pop(BASE_KEY, None)
    if base_name is None:
        return values
    if not isinstance(base_name, str):
        raise ConfigError(BASE_KEY, f"{path}: must be a file name, got {base_name!r}")
    base = _read_with_bases(path.parent / base_name, seen + (resolved,))
    return merge(base, values)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` merged into a copy of `base`: mappings key by key, anything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(values: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """`key.sub=value` strings (value read as YAML) merged into a copy of `values`."""
    out = copy.deepcopy(dict(values))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("", f"override {item!r} must look like key.subkey=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(key, f"override value {text!r} is not valid YAML: {error}") from None
        parts = key.strip().split(".")
        target = out
        for depth, part in enumerate(parts[:-1]):
            child = target.get(part)
            if child is None:
                child = target[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(".".join(parts[: depth + 1]), f"is not a section, cannot set {key}")
            target = child
        target[parts[-1]] = value
    return out


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config (with its base chain), apply `key=value` overrides, validate."""
    return config_from_mapping(apply_overrides(read_config_mapping(path), overrides))


def named_config(name: str) -> Path:
    """A shipped config by name ("base", "row_a", ...) or a path to a YAML file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    shipped = CONFIG_DIR / f"{name}.yaml"
    if not shipped.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError("", f"no config {name!r}: give a YAML path or one of {', '.join(known)}")
    return shipped
