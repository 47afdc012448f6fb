"""Student checkpoints: safetensors weights + JSON metadata; the only way weights enter the runtime.

A checkpoint is ONE ``.safetensors`` file. Its tensors are the student's ``state_dict`` (canonical sparse
weight layout ``(out, kz, ky, kx, in)``); its header metadata holds one key, ``elite_ros``, whose value is
a JSON document (`CheckpointMetadata`): the model kind (`lidar`: the student; `fusion`: the U2MKD
LiDAR-camera student, `elite_ros.fusion`) and the camera input it expects, architecture config, class
names and palette, learning map and its inverse, voxel grid (size, range, scales), the intensity scale
used in training, the training config, the source commit and whether the weights were trained at all.
Nothing is ever unpickled. Loading into another kind of network, or with another camera input, is refused
naming `model_kind` / `camera`.

Loading checks every key and shape and names, in one error, all keys that are missing, unexpected or
mis-shaped; metadata that disagree with the model, or class tables that disagree with each other
(`labels.class_table_problems`), are refused naming the field. Any class list passes that is consistent:
the runtime takes names, palette and learning map from here (`CheckpointMetadata.classes`), never from
SemanticKITTI's tables, which are only the defaults of a checkpoint that says nothing else.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import labels
from .atomic import atomic_file
from .camera import CameraInput
from .config_loader import ConfigError, dump_dataclass, load_dataclass
from .voxel import VoxelConfig

FORMAT_VERSION = 1  # bump when the metadata schema changes incompatibly
METADATA_KEY = "elite_ros"  # safetensors header key holding the JSON metadata
CACHE_ENV = "ELITE_ROS_CACHE"  # overrides ~/.cache/elite_ros
DEFAULT_CHECKPOINT_FILE = "student_synthetic.safetensors"  # in elite_ros/assets/ (default_checkpoint)
KITTI_INTENSITY_SCALE = 1.0  # KITTI .bin reflectance is already 0..1 (shared/data/README.md)
LIDAR_KIND = "lidar"  # model_kind of the LiDAR-only student (elite_ros.student)
FUSION_KIND = "fusion"  # model_kind of the U2MKD fusion student (elite_ros.fusion.MODEL_KIND)
MODEL_KINDS = (LIDAR_KIND, FUSION_KIND)
MAX_METADATA_DEPTH = 64  # nesting of the metadata JSON (a training config nests ~5 deep)
MAX_INTENSITY_SCALE = float(np.finfo(np.float32).max)  # the network's input is float32
#: safetensors dtypes a floating-point weight may be stored in (upcast to the model's on loading)
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
#: torch dtype -> its safetensors name, for the non-floating buffers (BatchNorm's num_batches_tracked)
_SAFETENSORS_DTYPES = {torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                       torch.uint8: "U8", torch.bool: "BOOL"}
MAX_LISTED = 5  # keys named in one error


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used with this model; the message names file and fields."""


@dataclass
class CheckpointMetadata:
    """What a checkpoint says about itself (JSON in the safetensors header).

    architecture: StudentConfig fields. voxel: VoxelConfig fields (voxel size metres, range, scales).
    intensity_scale: what training multiplied its input intensity (reflectance 0..1, KITTI's unit) by; the
    network's input is reflectance x intensity_scale (1.0: KITTI's 0..1 as it is; see `elite_ros.segmenter`).
    learning_map: raw label id (digit string) -> training id. learning_map_inv: training id (digit string)
    -> the raw id the `label` output writes for it; None (absent) = `labels.invert_learning_map` of the
    learning map, resolved on construction. palette: (num_classes, 3) RGB 0..255. trained: False for
    untrained (random) weights. Defaults: SemanticKITTI's classes (`labels.SEMANTIC_KITTI`).
    model_kind: which network the weights are (`MODEL_KINDS`; absent in older files = "lidar"). camera:
    the camera input a fusion model expects (`camera.CameraInput` fields: pixel normalisation, encoding;
    a camera stays optional), None for a LiDAR-only model.
    """

    architecture: dict[str, Any]
    voxel: dict[str, Any] = field(default_factory=lambda: dump_dataclass(VoxelConfig()))
    class_names: list[str] = field(default_factory=lambda: list(labels.CLASS_NAMES))
    palette: list[list[int]] = field(default_factory=lambda: labels.palette_rgb().tolist())
    learning_map: dict[str, int] = field(
        default_factory=lambda: {str(k): int(v) for k, v in labels.LEARNING_MAP.items()})
    learning_map_inv: dict[str, int] | None = None
    intensity_scale: float = KITTI_INTENSITY_SCALE
    training: dict[str, Any] = field(default_factory=dict)
    source_commit: str = "unknown"
    trained: bool = False
    model_kind: str = LIDAR_KIND
    camera: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        """Value checks the field types cannot express (types are checked by `load_dataclass`)."""
        for index, colour in enumerate(self.palette):
            if len(colour) != 3 or any(not 0 <= c <= 255 for c in colour):
                raise ConfigError(f"palette[{index}]", f"must be an [r, g, b] triple of integers 0..255, got {colour}")
        bad_keys = [k for k in self.learning_map if not k.isdigit()]
        if bad_keys:
            raise ConfigError("learning_map",
                              f"must map raw ids (digit strings) to training ids, got key(s) {bad_keys[:3]}")
        if self.learning_map_inv is None:
            inverse = labels.invert_learning_map({int(k): v for k, v in self.learning_map.items()})
            self.learning_map_inv = {str(k): v for k, v in inverse.items()}
        bad_keys = [k for k in self.learning_map_inv if not k.isdigit()]
        if bad_keys:
            raise ConfigError("learning_map_inv",
                              f"must map training ids (digit strings) to raw ids, got key(s) {bad_keys[:3]}")
        if not 0 < self.intensity_scale <= MAX_INTENSITY_SCALE:  # NaN and inf fail too
            raise ConfigError("intensity_scale", f"must be a finite positive number, got {self.intensity_scale}")
        load_dataclass(VoxelConfig, self.voxel, path="voxel")  # types and ranges, before any model is built
        if self.model_kind not in MODEL_KINDS:
            raise ConfigError("model_kind", f"must be one of {list(MODEL_KINDS)}, got {self.model_kind!r}")
        if (self.camera is not None) != (self.model_kind == FUSION_KIND):
            raise ConfigError("camera", f"a {self.model_kind!r} model must {'' if self.camera is None else 'not '}"
                                        f"say what camera input it expects (camera is "
                                        f"{'absent' if self.camera is None else 'given'})")
        if self.camera is not None:
            load_dataclass(CameraInput, self.camera, path="camera")

    @property
    def camera_input(self) -> CameraInput | None:
        """The camera input a fusion model expects (None for a LiDAR-only model)."""
        return None if self.camera is None else load_dataclass(CameraInput, self.camera, path="camera")

    def to_json(self) -> str:
        return json.dumps(dump_dataclass(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "checkpoint") -> CheckpointMetadata:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{source}: metadata is not valid JSON ({error})") from None
        except RecursionError:
            raise CheckpointError(f"{source}: metadata nests deeper than Python can read (at most "
                                  f"{MAX_METADATA_DEPTH} levels are allowed)") from None
        if not isinstance(values, dict):
            raise CheckpointError(f"{source}: metadata must be a JSON object")
        deep = _deeper_than(values, MAX_METADATA_DEPTH)
        if deep is not None:
            raise CheckpointError(f"{source}: metadata field {deep} nests deeper than {MAX_METADATA_DEPTH} levels")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise CheckpointError(f"{source}: unknown metadata field(s) {unknown}")
        missing = sorted(k for k in ("architecture",) if k not in values)
        if missing:
            raise CheckpointError(f"{source}: metadata lacks field(s) {missing}")
        try:
            metadata = load_dataclass(cls, values)
        except ConfigError as error:
            field_name = error.path.split(".")[0].split("[")[0] or "metadata"
            raise CheckpointError(f"{source}: metadata field(s) of the wrong type or out of range: {field_name} "
                                  f"must be valid ({error})") from None
        version = values.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{source}: metadata format_version {version}, this runtime reads "
                                  f"{FORMAT_VERSION}")
        return metadata

    @property
    def voxel_config(self) -> VoxelConfig:
        return load_dataclass(VoxelConfig, self.voxel, path="voxel")

    def class_problems(self) -> list[str]:
        """Why the class tables disagree with each other (`labels.class_table_problems`); [] when they agree."""
        learning_map, inverse = self._int_maps()
        return labels.class_table_problems(self.class_names, self.palette, learning_map, inverse)

    @property
    def classes(self) -> labels.ClassTable:
        """The model's classes (names, palette, learning map and inverse). Raises CheckpointError when the
        tables disagree (`class_problems`)."""
        problems = self.class_problems()
        if problems:
            raise CheckpointError("checkpoint metadata: " + "; ".join(problems))
        learning_map, inverse = self._int_maps()
        return labels.ClassTable(tuple(self.class_names), np.asarray(self.palette, dtype=np.uint8),
                                 learning_map, inverse)

    def _int_maps(self) -> tuple[dict[int, int], dict[int, int]]:
        inverse = self.learning_map_inv or {}  # resolved by __post_init__
        return ({int(k): int(v) for k, v in self.learning_map.items()},
                {int(k): int(v) for k, v in inverse.items()})


def _deeper_than(value: Any, limit: int) -> str | None:
    """The top-level key under which `value` (parsed JSON) nests deeper than `limit`, else None (no recursion)."""
    for key, child in value.items():
        stack = [(child, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > limit:
                return str(key)
            if isinstance(item, dict):
                stack.extend((v, depth + 1) for v in item.values())
            elif isinstance(item, list):
                stack.extend((v, depth + 1) for v in item)
    return None


def _listed(names: list[str], separator: str = ", ") -> str:
    """The first MAX_LISTED names, and how many more."""
    more = len(names) - MAX_LISTED
    return separator.join(names[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def source_commit(repo: Path | None = None) -> str:
    """The git commit of this source tree ("unknown" outside git), with "+dirty" for local changes."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "") if commit else "unknown"


def _model_architecture(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise TypeError(f"{type(model).__name__} has no dataclass `config`; cannot describe it")
    return dump_dataclass(config)


def model_kind(model: nn.Module) -> str:
    """The `model_kind` of a network (its class attribute; the LiDAR student has none: "lidar")."""
    return str(getattr(model, "model_kind", LIDAR_KIND))


def check_metadata(metadata: CheckpointMetadata, model: nn.Module, source: str = "checkpoint") -> None:
    """Raise CheckpointError naming every metadata field that disagrees with `model` or with the other fields
    (the class tables: `CheckpointMetadata.class_problems`): model kind and camera input first."""
    problems = []
    kind = model_kind(model)
    if metadata.model_kind != kind:
        problems.append(f"model_kind = {metadata.model_kind!r} in file, {kind!r} in model")
    if (metadata.camera is None) != (kind == LIDAR_KIND):
        problems.append(f"camera = {metadata.camera!r} in file, but a {kind!r} model "
                        f"{'takes no camera input' if kind == LIDAR_KIND else 'needs its camera input described'}")
    if problems:  # another network: its architecture fields would only repeat that
        raise CheckpointError(f"{source}: metadata disagree with the model: " + "; ".join(problems))
    expected = _model_architecture(model)
    found = metadata.architecture
    for name in sorted(set(expected) | set(found)):
        if name not in found:
            problems.append(f"architecture.{name} missing (model has {expected[name]!r})")
        elif name not in expected:
            problems.append(f"architecture.{name} = {found[name]!r} is unknown to the model")
        elif _normalise(found[name]) != _normalise(expected[name]):
            problems.append(f"architecture.{name} = {found[name]!r} in file, {expected[name]!r} in model")
    lidar = expected.get("lidar", expected)  # a fusion model's 3D branch holds the classes and stages
    num_classes = lidar.get("num_classes")
    if num_classes is not None and len(metadata.class_names) != num_classes:
        problems.append(f"class_names has {len(metadata.class_names)} names, model has {num_classes} classes")
    problems += metadata.class_problems()  # any consistent class list: names, palette, learning map, inverse
    try:
        voxel = metadata.voxel_config
    except ConfigError as error:
        problems.append(str(error))
    else:
        stage_scales = lidar.get("stage_scales", ())
        missing = [s for s in stage_scales if s not in voxel.scales]
        if missing:
            problems.append(f"voxel.scales {list(voxel.scales)} lack the model's stage scale(s) {missing}")
    if not (isinstance(metadata.intensity_scale, (int, float)) and metadata.intensity_scale > 0):
        problems.append(f"intensity_scale must be a positive number, got {metadata.intensity_scale!r}")
    if problems:
        raise CheckpointError(f"{source}: metadata disagree with the model or with each other: "
                              + "; ".join(problems))


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def make_metadata(model: nn.Module, **fields: Any) -> CheckpointMetadata:
    """Metadata for `model` with the package defaults (labels, voxel grid, commit, the model's kind and, for a
    fusion model, the default `CameraInput`) and `fields` on top."""
    fields.setdefault("source_commit", source_commit())
    fields.setdefault("model_kind", model_kind(model))
    if fields["model_kind"] == FUSION_KIND:
        fields.setdefault("camera", dump_dataclass(CameraInput()))
    return CheckpointMetadata(architecture=_model_architecture(model), **fields)


def save_checkpoint(path: str | Path, model: nn.Module, metadata: CheckpointMetadata | None = None) -> Path:
    """Write `model`'s weights and `metadata` to `path` atomically (temp sibling + rename)."""
    path = Path(path)
    metadata = metadata if metadata is not None else make_metadata(model)
    check_metadata(metadata, model, source=str(path))
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in model.state_dict().items()}
    with atomic_file(path) as temp:
        save_file(tensors, str(temp), metadata={METADATA_KEY: metadata.to_json()})
    return path


def read_metadata(path: str | Path) -> CheckpointMetadata:
    """The metadata of a checkpoint file, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a safetensors file ({error})") from None
    if METADATA_KEY not in header:
        raise CheckpointError(f"{path}: safetensors header has no '{METADATA_KEY}' metadata")
    return CheckpointMetadata.from_json(header[METADATA_KEY], source=str(path))


def load_checkpoint(path: str | Path, model: nn.Module) -> CheckpointMetadata:
    """Load weights into `model` after checking metadata, every key and every shape; returns the metadata.

    Raises CheckpointError naming all missing, unexpected, mis-shaped and mistyped keys at once (a floating
    weight may be stored as F64 / F32 / F16 / BF16, anything else exactly as the model has it), the keys
    holding NaN or infinite values, or the metadata fields that disagree with the model. The model is left
    untouched on error.
    """
    path = Path(path)
    metadata = read_metadata(path)
    check_metadata(metadata, model, source=str(path))
    expected = model.state_dict()
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        found_keys = set(handle.keys())
        missing = sorted(set(expected) - found_keys)
        unexpected = sorted(found_keys - set(expected))
        misshaped, mistyped = [], []
        for name in sorted(found_keys & set(expected)):
            stored = handle.get_slice(name)
            shape = tuple(stored.get_shape())
            if shape != tuple(expected[name].shape):
                misshaped.append(f"{name} {list(shape)} in file, {list(expected[name].shape)} in model")
            wanted = expected[name].dtype
            allowed = FLOAT_DTYPES if wanted.is_floating_point else (_SAFETENSORS_DTYPES.get(wanted, str(wanted)),)
            if stored.get_dtype() not in allowed:
                mistyped.append(f"{name} {stored.get_dtype()} in file, {' / '.join(allowed)} expected")
        problems = []
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if misshaped:
            problems.append(f"mis-shaped keys [{'; '.join(misshaped)}]")
        if mistyped:
            problems.append(f"{len(mistyped)} keys of the wrong dtype [{_listed(mistyped, '; ')}]")
        if problems:
            raise CheckpointError(f"{path}: weights do not fit the model: " + "; ".join(problems))
        tensors = {name: handle.get_tensor(name) for name in found_keys}
    not_finite = sorted(name for name, tensor in tensors.items()
                        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()))
    if not_finite:
        raise CheckpointError(f"{path}: weights hold NaN or infinite values in {len(not_finite)} of {len(tensors)} "
                              f"keys: {_listed(not_finite)}")
    model.load_state_dict(tensors, strict=True)
    return metadata


def cache_dir() -> Path:
    """Where generated files go: $ELITE_ROS_CACHE, else ~/.cache/elite_ros."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "elite_ros")


def default_checkpoint() -> Path:
    """Path of the bundled default checkpoint, `elite_ros/assets/DEFAULT_CHECKPOINT_FILE`: the student
    trained by `elite-ros-train default-checkpoint` (training/configs/default_checkpoint.yaml) on the
    licence-free synthetic world alone, stored as float16 (`load_checkpoint` upcasts to the model's dtype).
    Its metadata says what it saw and its validation figures. Nothing is generated or written.
    """
    path = Path(__file__).resolve().parent / "assets" / DEFAULT_CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: the bundled default checkpoint is missing from this installation "
                              "(reinstall elite_ros, or pass a checkpoint)")
    return path
