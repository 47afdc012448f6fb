"""Runtime parameters of the segment node and the bag tools: one typed dataclass, one JSON schema.

`schema/segment.param.schema.json` is the single description of every parameter (type, range, allowed
values, default, meaning); `config/segment.param.yaml` holds the shipped values in the ROS 2 params-file
format (``/**: ros__parameters: ...``). The rclpy node (`elite_ros.node`) builds its ParameterDescriptors
from the same schema, and `elite-ros segment` reads the same YAML, so a car and a bag replay run with the
same settings. No ROS import here.

Grouped parameters use ROS's dotted names (``camera.image_topic``; a params file may also nest them as
``camera: {image_topic: ...}``); `SegmentParams` holds them as a nested dataclass (`CameraParams`), and
`to_dict` / `from_dict` speak the flat dotted names the schema and the node use.
"""
from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from elite_ros import strict_yaml
from elite_ros.cloud import DEFAULT_INTENSITY_FIELDS  # tried in order when `intensity_field` is empty
from elite_ros.config_loader import ConfigError, dump_dataclass, load_dataclass
from elite_ros.labels import ClassTable
from elite_ros.transforms import nearest_rotation

PACKAGE = "elite_ros"
SCHEMA_FILE = ("schema", "segment.param.schema.json")
PARAMS_FILE = ("config", "segment.param.yaml")
ROS_PARAMS_KEY = "ros__parameters"
WILDCARD_NODE = "/**"
NO_INTENSITY = "none"
#: JSON-schema type -> the ROS parameter type shown in the README table
PARAMETER_TYPE_NAMES = {"number": "double", "integer": "int", "boolean": "bool", "array": "string[]"}
EXTRINSIC_VALUES = 12  # camera.extrinsic: a row-major 3 x 4 [R | t] (KITTI calib.txt's Tr layout)
IMAGE_SYNC_TOLERANCE_MS = 50.0  # ref §14 (ours): half a 10 Hz LiDAR period, as the training bags pair images


class ParameterError(ValueError):
    """An invalid parameter value; `name` is the parameter, the message says what is wrong."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"invalid parameter '{name}': {reason}")


@dataclass(frozen=True)
class CameraParams:
    """The optional camera of a fusion checkpoint (docs/reference.md §14): the ``camera.*`` parameters.

    image_topic: sensor_msgs/Image topic; "" = no camera (LiDAR only; a fusion model then always runs on its
    imputation path). info_topic: its sensor_msgs/CameraInfo; "" = ``camera_info`` beside the image topic.
    extrinsic: LiDAR -> camera optical frame, row-major 3 x 4 [R | t] (metres), 12 values; () = from TF
    (a bag's /tf_static; the node needs tf2_ros for it). sync_tolerance_ms: largest |scan stamp - image
    stamp| for a pair; a scan without an image that close runs on the imputation path.
    """

    image_topic: str = ""
    info_topic: str = ""
    extrinsic: tuple[float, ...] = ()
    sync_tolerance_ms: float = IMAGE_SYNC_TOLERANCE_MS

    @property
    def enabled(self) -> bool:
        return bool(self.image_topic.strip())

    @property
    def camera_info_topic(self) -> str:
        """`info_topic`, else ``camera_info`` beside the image topic (image_transport's convention)."""
        if self.info_topic.strip() or not self.enabled:
            return self.info_topic.strip()
        return self.image_topic.strip().rsplit("/", 1)[0] + "/camera_info"

    def lidar_to_camera(self) -> np.ndarray | None:
        """(4, 4) LiDAR -> optical-frame transform from `extrinsic`, or None when it is empty."""
        if not self.extrinsic:
            return None
        matrix = np.eye(4)
        matrix[:3, :] = np.asarray(self.extrinsic, dtype=np.float64).reshape(3, 4)
        return matrix


@dataclass(frozen=True)
class SegmentParams:
    """Typed runtime parameters (meaning, units and ranges in schema/segment.param.schema.json)."""

    checkpoint: str = ""
    device: str = "auto"
    precision: str = "fp32"
    backend: str = "auto"
    label_format: str = "class_id"
    publish_probability: bool = True
    publish_rgb: bool = True
    intensity_field: str = ""
    intensity_max: float = 0.0  # raw value of full reflectance; 0 = from the field's datatype
    min_range: float = 0.0  # metres
    max_range: float = 120.0  # metres
    max_points: int = 200_000  # 0 = no cap
    tta_votes: int = 1
    threads: int = 1  # torch CPU threads; 0 = one per core
    nice: int = 0  # process niceness, -20 .. 19; 0 = as started
    latency_budget_ms: float = 0.0  # 0 = by device (elite_ros.diagnostics.AUTO_BUDGET_MS)
    stale_input_s: float = 1.0  # seconds
    filtered_keep_unlabelled: bool = True
    filtered_classes: tuple[str, ...] = ("road", "parking", "sidewalk", "other-ground", "terrain")
    camera: CameraParams = field(default_factory=CameraParams)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, base: SegmentParams | None = None) -> SegmentParams:
        """Validated parameters: `values` override `base` (default: the dataclass defaults).

        Raises ParameterError naming the first invalid or unknown parameter.
        """
        merged = (base or cls()).to_dict()
        merged.update(flatten(values))
        validate(merged)
        try:
            return load_dataclass(cls, nest(merged))
        except ConfigError as error:  # the schema said yes but the type did not fit: name the parameter
            raise ParameterError(error.path.split("[")[0] or "parameters", error.reason) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists instead of tuples) by their (dotted) parameter names, as the node declares them."""
        return flatten(dump_dataclass(self))

    def replace(self, **changes: Any) -> SegmentParams:
        """A validated copy with some values changed."""
        return SegmentParams.from_dict(changes, base=self)

    @property
    def intensity_fields(self) -> tuple[str, ...]:
        """Field names `cloud.decode` tries for intensity; () when intensity is switched off."""
        name = self.intensity_field.strip()
        if not name:
            return DEFAULT_INTENSITY_FIELDS
        if name.lower() == NO_INTENSITY:
            return ()
        return (name,)

    def filtered_class_ids(self, classes: ClassTable) -> np.ndarray:
        """(K,) uint8 training ids removed from the filtered cloud: `filtered_classes` looked up among the
        loaded model's `classes` (its checkpoint's names). Raises ParameterError('filtered_classes') naming
        the unknown names and the model's classes."""
        try:
            return classes.ids_of(self.filtered_classes)
        except KeyError as error:
            raise ParameterError("filtered_classes", f"{error.args[0]} (name some of them, or none: [])") from None


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted names (``{"camera": {"image_topic": x}}`` -> ``{"camera.image_topic": x}``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted names -> nested mappings (the inverse of `flatten`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *sections, name = key.split(".")
        target = out
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = value
    return out


def find_share_file(kind: str, name: str) -> Path:
    """A file shipped under `<kind>/` (config, schema, launch): source tree, pip prefix or ament share."""
    candidates = [
        Path(__file__).resolve().parents[1] / kind / name,  # source tree / editable install
        Path(sys.prefix) / "share" / PACKAGE / kind / name,  # pip install (data_files)
    ]
    try:  # colcon install: ament index
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / kind / name)
    except Exception:  # noqa: BLE001 - not in a ROS workspace, or the package is not indexed
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{kind}/{name} not found (looked in {', '.join(map(str, candidates))})")


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The JSON schema of the params file (dict)."""
    return json.loads(find_share_file(*SCHEMA_FILE).read_text())


def parameter_schema() -> dict[str, dict[str, Any]]:
    """name -> JSON-schema property (type, default, description, minimum/maximum, enum, pattern)."""
    return load_schema()["definitions"]["segment"]["properties"]


def default_params_file() -> Path:
    """The shipped config/segment.param.yaml."""
    return find_share_file(*PARAMS_FILE)


def markdown_table() -> str:
    """The parameter table for the README, generated from the schema (name, type, default, range, meaning)."""
    rows = ["| parameter | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for name, prop in parameter_schema().items():
        kind = PARAMETER_TYPE_NAMES.get(prop["type"], "string")
        if prop["type"] == "array" and prop["items"]["type"] == "number":
            kind = "double[]"
        if "minimum" in prop:
            allowed = f"{prop['minimum']} .. {prop['maximum']}"
        elif "enum" in prop:
            allowed = " \\| ".join(f"`{v}`" for v in prop["enum"])
        elif "pattern" in prop:
            allowed = f"`{prop['pattern']}`".replace("|", "\\|")
        elif prop["type"] == "array" and prop["items"]["type"] == "number":
            allowed = f"{prop['maxItems']} numbers, or none"
        elif prop["type"] == "array":
            allowed = "class names"
        else:
            allowed = ""
        default = json.dumps(prop["default"]) if prop["type"] in ("array", "string") else str(prop["default"]).lower()
        meaning = prop["description"].replace("|", "\\|")
        rows.append(f"| `{name}` | {kind} | `{default}` | {allowed} | {meaning} |")
    return "\n".join(rows) + "\n"


def _error_parameter(error: jsonschema.ValidationError, values: Mapping[str, Any]) -> tuple[str, str]:
    """(parameter name, reason) for a schema error on ``{"/**": {"ros__parameters": values}}``."""
    path = [p for p in error.absolute_path][2:]  # strip "/**", "ros__parameters"
    if path and isinstance(path[0], str):
        return path[0], error.message
    known = parameter_schema()
    if error.validator == "additionalProperties":
        unknown = sorted(set(values) - set(known))
        refusal = unknown_parameter(unknown[0] if unknown else "?", list(known))
        return refusal.name, refusal.reason
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in values]
        return (missing[0] if missing else "?"), "missing"
    return "?", error.message


def validate(values: Mapping[str, Any]) -> None:
    """Check a complete parameter dict against the schema plus cross-parameter rules.

    Raises ParameterError naming the parameter.
    """
    for name, value in values.items():  # JSON-schema bounds let NaN through: every comparison with it is false
        for number in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(number, float) and not math.isfinite(number):
                raise ParameterError(name, f"must be a finite number, got {number}")
    document = {WILDCARD_NODE: {ROS_PARAMS_KEY: _plain(values)}}
    validator = jsonschema.Draft7Validator(load_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        name, reason = _error_parameter(errors[0], values)
        raise ParameterError(name, reason)
    if values["min_range"] >= values["max_range"]:
        raise ParameterError("min_range", f"{values['min_range']} must be below max_range ({values['max_range']})")
    extrinsic = list(values["camera.extrinsic"])
    if extrinsic:
        if len(extrinsic) != EXTRINSIC_VALUES:
            raise ParameterError("camera.extrinsic", f"needs {EXTRINSIC_VALUES} values (row-major 3 x 4 [R | t]) or "
                                                     f"none, got {len(extrinsic)}")
        try:
            nearest_rotation(np.asarray(extrinsic, dtype=np.float64).reshape(3, 4)[:, :3])
        except ValueError as error:
            raise ParameterError("camera.extrinsic", f"its 3 x 3 part is {error}") from None


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Tuples/arrays -> lists so JSON-schema 'array' matches whatever container a caller used."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (tuple, np.ndarray)) or type(value).__name__ == "array":
            value = list(value)
        out[key] = value
    return out


def load_params_file(path: str | Path | None = None, *, node_name: str | None = None) -> SegmentParams:
    """Parameters from a ROS 2 params file (default: the shipped config/segment.param.yaml).

    Uses the ``/**`` section, or the section of `node_name` when given and present; values missing from the
    file keep their defaults. ROS-standard node parameters (`use_sim_time`, `qos_overrides...`) are
    ignored. Raises FileNotFoundError / ParameterError (naming the parameter, or `params_file` with the
    path and line for a file that is not valid YAML; see `read_params_document`).
    """
    path = Path(path) if path is not None else default_params_file()
    document = read_params_document(path)
    section = None
    for key in ([node_name, f"/{node_name}"] if node_name else []) + [WILDCARD_NODE]:
        if key in document:
            section = document[key]
            break
    if section is None and len(document) == 1:
        section = next(iter(document.values()))
    if not isinstance(section, dict) or not isinstance(section.get(ROS_PARAMS_KEY), dict):
        raise ParameterError("params_file", f"{path}: no '{WILDCARD_NODE}: {ROS_PARAMS_KEY}:' section")
    values = {key: value for key, value in section[ROS_PARAMS_KEY].items() if not _ros_standard(key)}
    return SegmentParams.from_dict(values)


def read_params_document(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a ROS 2 params file, as the node and the bag tools read it.

    Raises FileNotFoundError for a missing file, and ParameterError('params_file') with the path, line and
    column of a YAML error (aliases and duplicate keys included: `elite_ros.strict_yaml`), for a file that is
    not UTF-8 or cannot be read, or whose top level is not a mapping of node sections: one line each, where
    rcl's own parser would end the node with a traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ParameterError("params_file", f"{path} cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ParameterError("params_file", f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
                                            f"offset {error.start})") from None
    try:
        document = strict_yaml.load(text) or {}
    except yaml.YAMLError as error:
        where, problem = strict_yaml.describe(error)
        raise ParameterError("params_file", f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(document, dict):
        raise ParameterError("params_file", f"{path}: not a ROS 2 params file (expected '/**: ros__parameters: ...')")
    return document


def unknown_parameter(name: str, known: list[str] | None = None) -> ParameterError:
    """The error for a parameter the node does not have, with the closest known name when one is close."""
    known = list(parameter_schema()) if known is None else known
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ParameterError(name, f"unknown parameter ({hint}known: {', '.join(known)})")


#: parameters every rclpy node accepts (ROS 2 itself handles them): ignored by the bag tools
ROS_STANDARD_PARAMETERS = ("use_sim_time",)
QOS_OVERRIDES_PREFIX = "qos_overrides"


def _ros_standard(name: str) -> bool:
    """True for `use_sim_time` and ``qos_overrides`` / ``qos_overrides.<topic>...`` (node-only settings)."""
    return (name in ROS_STANDARD_PARAMETERS or name == QOS_OVERRIDES_PREFIX
            or name.startswith(QOS_OVERRIDES_PREFIX + "."))


if __name__ == "__main__":  # python -m elite_ros.params: print the README parameter table
    print(markdown_table(), end="")
