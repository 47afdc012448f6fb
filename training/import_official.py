"""Official ELiTe / 2DPASS checkpoints -> the runtime's student checkpoint (safetensors + JSON metadata).

The 2DPASS model zoo's SemanticKITTI "4scale-64dimension" model and the student of the official ELiTe
code are this package's `Student` (docs/reference.md §3). Their files are read with
`elite_ros_training.safe_unpickle` (nothing in them runs), and their tensors are renamed:

- the student's tensors are the state dict's ``model_3d.*`` entries in a Lightning ``.ckpt`` (beside
  ``model_2d.*``, ``fusion.*`` ...), or the whole of a plain state dict (``.pt`` / ``.pth``, with or
  without that prefix); the prefix is found as whatever precedes ``voxel_3d_generator.PPmodel.0.weight``;
- official name -> this package's name, per `NAME_MAP`: ``voxel_3d_generator.PPmodel`` -> ``input_mlp``,
  ``spv_enc.<i>.v_enc.<j>.layers.{0,1,3,4}`` -> ``stages.<i>.voxel_encoder.<j>.{conv1,norm1,conv2,norm2}``,
  ``...layers_in.{0,1}`` -> ``...shortcut_{conv,norm}``, ``spv_enc.<i>.p_enc.{layer_in,PPmodel,layer_out}``
  -> ``stages.<i>.point_encoder.{identity,context,output}``, ``classifier`` -> ``classifier``;
- every tensor copies as it is, except the 1x1x1 shortcut convolutions: spconv 2.x computes a kernel-size-1
  conv as ``features @ weight.view(in, out)``, the transpose of its stored (out, 1, 1, 1, in) layout
  (docs/reference.md §12), so the official weights are transposed into this package's layout;
- the loss's class weights (``criterion.*``) and everything outside the student (the 2D branch, fusion
  heads, optimiser and scheduler state, callbacks) are ignored and counted by group.

A checkpoint of another architecture (e.g. 2DPASS "6scale-256dimension") is refused, naming the
mismatch. The voxel grid comes from the checkpoint's ``hyper_parameters`` config when it has one
(``dataset_params.{min,max}_volume_space``, ``model_params.spatial_shape`` / ``scale_list``,
docs/reference.md §1), else the package default (the same grid).
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from elite_ros.checkpoint import KITTI_INTENSITY_SCALE, make_metadata, save_checkpoint
from elite_ros.config_loader import dump_dataclass
from elite_ros.student import OFFSET_FEATURES, Student, StudentConfig, count_parameters
from elite_ros.voxel import VoxelConfig
from elite_ros_training.safe_unpickle import load_checkpoint_file

PROVENANCE = "official ELiTe/2DPASS weights"
LIGHTNING_STUDENT_PREFIX = "model_3d."  # the official LightningModules' student attribute (docs/reference.md §1)
ANCHOR_KEY = "voxel_3d_generator.PPmodel.0.weight"  # first Linear of the input MLP: (hidden, in + 6)
IGNORED_STUDENT_GROUPS = ("criterion",)  # inside the student, training-only: the CE loss's class weights
SHORTCUT_SUFFIX = "shortcut_conv.weight"  # 1x1x1 convs stored transposed by spconv 2.x (docs/reference.md §12)
HASH_CHUNK_BYTES = 1 << 20

#: official student name (regex, without prefix) -> this package's name (docs/reference.md §3.1)
NAME_MAP: tuple[tuple[str, str], ...] = (
    (r"voxel_3d_generator\.PPmodel\.([02])\.", r"input_mlp.\1."),
    (r"spv_enc\.(\d+)\.v_enc\.(\d+)\.layers\.0\.", r"stages.\1.voxel_encoder.\2.conv1."),
    (r"spv_enc\.(\d+)\.v_enc\.(\d+)\.layers\.1\.", r"stages.\1.voxel_encoder.\2.norm1."),
    (r"spv_enc\.(\d+)\.v_enc\.(\d+)\.layers\.3\.", r"stages.\1.voxel_encoder.\2.conv2."),
    (r"spv_enc\.(\d+)\.v_enc\.(\d+)\.layers\.4\.", r"stages.\1.voxel_encoder.\2.norm2."),
    (r"spv_enc\.(\d+)\.v_enc\.(\d+)\.layers_in\.0\.", r"stages.\1.voxel_encoder.\2.shortcut_conv."),
    (r"spv_enc\.(\d+)\.v_enc\.(\d+)\.layers_in\.1\.", r"stages.\1.voxel_encoder.\2.shortcut_norm."),
    (r"spv_enc\.(\d+)\.p_enc\.layer_in\.", r"stages.\1.point_encoder.identity."),
    (r"spv_enc\.(\d+)\.p_enc\.PPmodel\.", r"stages.\1.point_encoder.context."),
    (r"spv_enc\.(\d+)\.p_enc\.layer_out\.", r"stages.\1.point_encoder.output."),
    (r"classifier\.", r"classifier."),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in NAME_MAP)
_STAGE = re.compile(r"spv_enc\.(\d+)\.")


class OfficialImportError(ValueError):
    """A file that is not an official 4scale-64dimension student checkpoint; the message names file and field."""


@dataclass
class OfficialWeights:
    """What `read_official` took from a file.

    state: this package's student state dict (shortcuts already transposed). prefix: the official
    prefix found (``"model_3d."`` or ``""``). ignored: group -> number of tensors not taken.
    ignored_entries: top-level checkpoint entries not used (optimizer_states, callbacks, ...).
    config: the official config from ``hyper_parameters`` (plain dict) or None.
    """

    state: dict[str, Tensor]
    prefix: str
    transposed: list[str]
    ignored: dict[str, int]
    ignored_entries: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None


@dataclass
class ImportResult:
    """One finished import: where it wrote, what it took and ignored, where the grid came from."""

    path: Path
    tensors: int
    parameters: int
    transposed: int
    ignored: dict[str, int]
    ignored_entries: list[str]
    voxel: VoxelConfig
    voxel_source: str
    sha256: str


def official_to_student_name(name: str) -> str | None:
    """This package's name for an official student tensor name (no prefix), None when it has none."""
    for pattern, replacement in _COMPILED:
        if pattern.match(name):
            return pattern.sub(replacement, name, count=1)
    return None


def from_spconv_1x1(weight: Tensor) -> Tensor:
    """An official 1x1x1 conv weight -> this package's (out, 1, 1, 1, in) layout, same function.

    spconv 2.x applies a kernel-size-1 conv as ``features @ weight.view(in, out)`` (docs/reference.md §12):
    the stored buffer read as an (in, out) matrix. This package computes ``features @ W.view(out, in).T``,
    so W = that matrix transposed.
    """
    out_channels, in_channels = weight.shape[0], weight.shape[-1]
    return weight.reshape(in_channels, out_channels).t().reshape(weight.shape).contiguous()


def read_official(path: str | Path, transpose_shortcuts: bool = True) -> OfficialWeights:
    """Read an official checkpoint (`.ckpt` / `.pt` / `.pth`) and map its student to this package's names.

    transpose_shortcuts=False copies the 1x1x1 shortcut weights as stored (wrong; kept to show it).
    Raises OfficialImportError for another architecture (naming channel width, stages, classes, input
    features, missing or mis-shaped tensors), UnsafeCheckpointError for a file that names code.
    """
    path = Path(path)
    tree = load_checkpoint_file(path)
    tensors, entries = _state_dict(tree, path)
    config = _official_config(tree)
    if config is not None:  # read: architecture checks and the voxel grid
        entries = [entry for entry in entries if entry != "hyper_parameters"]
    prefix = _student_prefix(tensors, path)
    expected = Student(StudentConfig()).state_dict()
    _check_architecture(tensors, prefix, config, path)

    state: dict[str, Tensor] = {}
    ignored: Counter[str] = Counter()
    unknown: list[str] = []
    transposed: list[str] = []
    for key, tensor in tensors.items():
        if not key.startswith(prefix):
            ignored[key.split(".", 1)[0]] += 1
            continue
        name = key[len(prefix):]
        group = name.split(".", 1)[0]
        if group in IGNORED_STUDENT_GROUPS:
            ignored[f"{prefix}{group}"] += 1
            continue
        ours = official_to_student_name(name)
        if ours is None or ours not in expected:
            unknown.append(key)
            continue
        if transpose_shortcuts and ours.endswith(SHORTCUT_SUFFIX):
            tensor = from_spconv_1x1(tensor)
            transposed.append(ours)
        state[ours] = tensor
    _check_tensors(state, expected, unknown, path)
    return OfficialWeights(state=state, prefix=prefix, transposed=transposed, ignored=dict(sorted(ignored.items())),
                           ignored_entries=entries, config=config)


def voxel_config_from_official(config: Mapping[str, Any] | None, source: str = "checkpoint") -> tuple[VoxelConfig, str]:
    """The voxel grid of an official config (docs/reference.md §1) and where it came from.

    Uses ``dataset_params.min_volume_space`` / ``max_volume_space`` (metres, x y z),
    ``model_params.spatial_shape`` (cells, x y z) and ``scale_list``; without them, the default grid.
    """
    if not config:
        return VoxelConfig(), "the package default (no config in the checkpoint)"
    dataset = config.get("dataset_params") or {}
    model = config.get("model_params") or {}
    lower, upper = dataset.get("min_volume_space"), dataset.get("max_volume_space")
    shape = model.get("spatial_shape")
    if lower is None or upper is None or shape is None:
        return VoxelConfig(), "the package default (the checkpoint's config has no volume / spatial_shape)"
    try:
        lower, upper, shape = [float(v) for v in lower], [float(v) for v in upper], [int(v) for v in shape]
        if not len(lower) == len(upper) == len(shape) == 3:
            raise ValueError("min/max_volume_space and spatial_shape must each hold x, y, z")
        sizes = [(hi - lo) / cells for lo, hi, cells in zip(lower, upper, shape, strict=True)]
    except (TypeError, ValueError, ZeroDivisionError) as error:
        raise OfficialImportError(f"{source}: config volume / spatial_shape unusable ({error})") from None
    if max(sizes) - min(sizes) > 1e-6 * max(sizes):
        raise OfficialImportError(f"{source}: config voxels are not cubes ({sizes} m per axis from "
                                  f"spatial_shape {shape}); this runtime's grid has one voxel size")
    scales = (1,) + tuple(int(s) for s in model.get("scale_list", StudentConfig().stage_scales))
    try:
        voxel = VoxelConfig(voxel_size=round(sizes[0], 9), min_bound=tuple(lower), max_bound=tuple(upper),
                            scales=scales)
    except ValueError as error:
        raise OfficialImportError(f"{source}: config voxel grid: {error}") from None
    return voxel, "the checkpoint's hyper_parameters config"


def import_official(source: str | Path, out: str | Path) -> ImportResult:
    """Write the student of official checkpoint `source` to `out` (.safetensors), atomically."""
    source, out = Path(source), Path(out)
    if out.suffix != ".safetensors":
        raise OfficialImportError(f"{out}: the output must be a .safetensors file")
    if out.exists() and out.resolve() == source.resolve():
        raise OfficialImportError(f"{out}: refusing to overwrite the input checkpoint")
    weights = read_official(source)
    voxel, voxel_source = voxel_config_from_official(weights.config, str(source))
    student = Student(StudentConfig())
    student.load_state_dict(weights.state, strict=True)
    digest = sha256_of(source)
    training = {
        "provenance": PROVENANCE,
        "source": source.name,
        "sha256": digest,
        "ignored": weights.ignored,
        "ignored_entries": weights.ignored_entries,
        "voxel_grid": voxel_source,
    }
    metadata = make_metadata(student, voxel=dump_dataclass(voxel), intensity_scale=KITTI_INTENSITY_SCALE,
                             training=training, trained=True)
    path = save_checkpoint(out, student, metadata)
    return ImportResult(path=path, tensors=len(weights.state), parameters=count_parameters(student),
                        transposed=len(weights.transposed), ignored=weights.ignored,
                        ignored_entries=weights.ignored_entries, voxel=voxel, voxel_source=voxel_source,
                        sha256=digest)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ checks
def _state_dict(tree: Any, path: Path) -> tuple[dict[str, Tensor], list[str]]:
    """(the tensors of a Lightning checkpoint's state_dict or of a plain state dict, other top-level entries)."""
    if not isinstance(tree, dict):
        raise OfficialImportError(f"{path}: holds a {type(tree).__name__}, not a checkpoint or state dict")
    if isinstance(tree.get("state_dict"), dict):
        tensors, entries = tree["state_dict"], sorted(str(k) for k in tree if k != "state_dict")
    else:
        tensors, entries = tree, []
    bad = [str(k) for k, v in tensors.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        raise OfficialImportError(f"{path}: state_dict entries that are not named tensors: {bad[:5]}")
    return tensors, entries


def _official_config(tree: Any) -> dict[str, Any] | None:
    """The official YAML config inside ``hyper_parameters`` (itself, or its ``config`` entry), if any."""
    hyper = tree.get("hyper_parameters") if isinstance(tree, dict) else None
    for candidate in (hyper, hyper.get("config") if isinstance(hyper, dict) else None):
        if isinstance(candidate, dict) and ("model_params" in candidate or "dataset_params" in candidate):
            return candidate
    return None


def _student_prefix(tensors: Mapping[str, Tensor], path: Path) -> str:
    prefixes = sorted(key[:-len(ANCHOR_KEY)] for key in tensors if key.endswith(ANCHOR_KEY)
                      and (key == ANCHOR_KEY or key.endswith("." + ANCHOR_KEY)))
    if not prefixes:
        raise OfficialImportError(f"{path}: no ELiTe / 2DPASS student in its state_dict (no "
                                  f"'[{LIGHTNING_STUDENT_PREFIX}]{ANCHOR_KEY}')")
    if len(prefixes) > 1:
        raise OfficialImportError(f"{path}: several students in its state_dict (prefixes {prefixes})")
    return prefixes[0]


def _check_architecture(tensors: Mapping[str, Tensor], prefix: str, config: Mapping[str, Any] | None,
                        path: Path) -> None:
    """Refuse another architecture, naming every mismatch (tensor shapes first, then the config)."""
    ours = StudentConfig()
    problems = []
    first = tensors[prefix + ANCHOR_KEY]
    if first.ndim == 2:
        if first.shape[0] != ours.hidden_channels:
            problems.append(f"channel width {first.shape[0]} (this student: {ours.hidden_channels})")
        if first.shape[1] - OFFSET_FEATURES != ours.in_features:
            problems.append(f"{first.shape[1] - OFFSET_FEATURES} input features per point (this student: "
                            f"{ours.in_features})")
    stages = {int(m.group(1)) for key in tensors if key.startswith(prefix)
              and (m := _STAGE.match(key[len(prefix):]))}
    if len(stages) != len(ours.stage_scales):
        problems.append(f"{len(stages)} SPV stages (this student: {len(ours.stage_scales)})")
    classes = tensors.get(prefix + "classifier.2.weight")
    if classes is not None and classes.shape[0] != ours.num_classes:
        problems.append(f"{classes.shape[0]} classes (this student: {ours.num_classes}, SemanticKITTI)")
    model = (config or {}).get("model_params") or {}
    for key, value in (("hiden_size", ours.hidden_channels), ("hidden_size", ours.hidden_channels),
                       ("num_classes", ours.num_classes), ("input_dims", ours.in_features)):
        if key in model and model[key] != value:
            problems.append(f"config model_params.{key} = {model[key]!r} (this student: {value})")
    if "scale_list" in model and [int(s) for s in model["scale_list"]] != list(ours.stage_scales):
        problems.append(f"config model_params.scale_list = {list(model['scale_list'])} (this student: "
                        f"{list(ours.stage_scales)})")
    if problems:
        raise OfficialImportError(f"{path}: not the 4scale-64dimension ELiTe / 2DPASS student: " + "; ".join(problems))


def _check_tensors(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], unknown: list[str],
                   path: Path) -> None:
    missing = sorted(set(expected) - set(state))
    misshaped = [f"{name} {list(state[name].shape)} (this student: {list(expected[name].shape)})"
                 for name in sorted(set(state) & set(expected)) if state[name].shape != expected[name].shape]
    problems = [f"{len(names)} {what}: {names[:5]}" for what, names in (
        ("student tensor(s) with no counterpart here", unknown), ("tensor(s) missing", missing),
        ("mis-shaped", misshaped)) if names]
    if problems:
        raise OfficialImportError(f"{path}: its student does not fit this one: " + "; ".join(problems))
