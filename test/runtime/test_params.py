"""Parameters: dataclass defaults, the JSON schema and config/segment.param.yaml say the same thing."""
from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from elite_ros.labels import CLASS_NAMES, SEMANTIC_KITTI
from elite_ros.params import (
    DEFAULT_INTENSITY_FIELDS,
    ParameterError,
    SegmentParams,
    default_params_file,
    load_params_file,
    load_schema,
    parameter_schema,
)


def test_shipped_yaml_validates_against_the_schema():
    document = yaml.safe_load(default_params_file().read_text())
    jsonschema.Draft7Validator.check_schema(load_schema())
    jsonschema.validate(document, load_schema())


def test_dataclass_schema_and_yaml_agree():
    schema = parameter_schema()
    defaults = SegmentParams().to_dict()
    assert set(schema) == set(defaults)
    for name, prop in schema.items():
        assert prop["default"] == defaults[name], name
        assert prop["description"], name
    assert load_params_file() == SegmentParams()


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"device": "gpu"}, "device"),
        ({"device": "cuda:x"}, "device"),
        ({"precision": "int8"}, "precision"),
        ({"label_format": "labels"}, "label_format"),
        ({"tta_votes": 0}, "tta_votes"),
        ({"max_points": -1}, "max_points"),
        ({"max_points": 1.5}, "max_points"),
        ({"intensity_max": -1.0}, "intensity_max"),
        ({"latency_budget_ms": -1.0}, "latency_budget_ms"),
        ({"threads": -1}, "threads"),
        ({"nice": -21}, "nice"),
        ({"nice": 20}, "nice"),
        ({"stale_input_s": 0.0}, "stale_input_s"),
        ({"filtered_classes": [""]}, "filtered_classes"),
        ({"filtered_classes": ["road", "road"]}, "filtered_classes"),
        ({"publish_rgb": "yes"}, "publish_rgb"),
        ({"min_range": 50.0, "max_range": 10.0}, "min_range"),
        ({"no_such_thing": 1}, "no_such_thing"),
    ],
)
def test_invalid_values_name_the_parameter(values, name):
    with pytest.raises(ParameterError) as info:
        SegmentParams.from_dict(values)
    assert info.value.name == name
    assert f"'{name}'" in str(info.value)


def test_valid_values_are_typed():
    p = SegmentParams.from_dict({"device": "cuda:1", "max_range": 80, "max_points": 5000.0, "filtered_classes": []})
    assert p.device == "cuda:1"
    assert isinstance(p.max_range, float) and p.max_range == 80.0
    assert isinstance(p.max_points, int) and p.max_points == 5000
    assert p.filtered_classes == () and p.filtered_class_ids(SEMANTIC_KITTI).size == 0
    assert p.replace(tta_votes=3).tta_votes == 3


def test_intensity_fields_and_filtered_ids():
    assert SegmentParams().intensity_fields == DEFAULT_INTENSITY_FIELDS
    assert SegmentParams(intensity_field="reflectivity").intensity_fields == ("reflectivity",)
    assert SegmentParams(intensity_field="none").intensity_fields == ()
    ids = SegmentParams().filtered_class_ids(SEMANTIC_KITTI)
    assert [CLASS_NAMES[i] for i in ids] == list(SegmentParams().filtered_classes)


def test_filtered_classes_are_looked_up_among_the_models_classes():
    """Any name passes the schema; the loaded model's classes decide (SemanticKITTI's are only a default)."""
    from elite_ros.labels import ClassTable

    five = ClassTable.build(["void", "ground", "wall", "plant", "vehicle"], [[0, 0, 0]] * 5,
                            {0: 0, 100: 1, 200: 2, 300: 3, 400: 4})
    params = SegmentParams.from_dict({"filtered_classes": ["ground", "plant"]})
    assert params.filtered_class_ids(five).tolist() == [1, 3]
    for table, wrong in ((SEMANTIC_KITTI, ["ground"]), (five, ["road"]), (SEMANTIC_KITTI, ["roads"])):
        with pytest.raises(ParameterError) as info:
            SegmentParams.from_dict({"filtered_classes": wrong}).filtered_class_ids(table)
        assert info.value.name == "filtered_classes" and "'filtered_classes'" in str(info.value)
        assert f"{wrong}" in str(info.value) and ", ".join(table.names) in str(info.value)


def test_params_file_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        load_params_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    tta_votes: 99\n")
    with pytest.raises(ParameterError, match="tta_votes"):
        load_params_file(bad)
    named = tmp_path / "named.yaml"
    named.write_text("segment_node:\n  ros__parameters:\n    device: cpu\n")
    assert load_params_file(named, node_name="segment_node").device == "cpu"


README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_parameter_table_agrees_with_the_schema():
    from elite_ros.params import markdown_table

    table = markdown_table()
    rows = table.strip().splitlines()[2:]
    assert len(rows) == len(parameter_schema())
    text = README.read_text()
    assert "| `checkpoint` |" in text, "README.md lacks the parameter table (make it: python -m elite_ros.params)"
    missing = [row.split("|")[1].strip() for row in rows if row not in text]
    assert not missing, f"README parameter rows differ from the schema for {missing}"


ROS_STYLE_FILE = """\
/**:
  ros__parameters:
    use_sim_time: true
    qos_overrides:
      /segment_node/input/pointcloud:
        subscription:
          reliability: reliable
          depth: 10
    qos_overrides./segment_node/output/pointcloud/segmentation.publisher.depth: 5
    max_range: 100
    device: cpu
"""


def test_params_file_accepts_what_the_node_accepts(tmp_path: Path):
    """ROS-standard keys are the node's business; an integer is a valid double (as for the node)."""
    path = tmp_path / "ros.yaml"
    path.write_text(ROS_STYLE_FILE)
    params = load_params_file(path)
    assert params.max_range == 100.0 and isinstance(params.max_range, float) and params.device == "cpu"
    path.write_text(ROS_STYLE_FILE + "    use_sim_tim: true\n")  # a typo is still refused, named
    with pytest.raises(ParameterError, match="'use_sim_tim'"):
        load_params_file(path)


def test_broken_yaml_is_a_parameter_error_naming_the_file(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**:\n  ros__parameters:\n    device: [cpu\n    tta_votes: 1\n")
    with pytest.raises(ParameterError, match="broken.yaml is not valid YAML") as raised:
        load_params_file(broken)
    assert raised.value.name == "params_file"


def test_yaml_error_names_file_line_and_column(tmp_path: Path):
    from elite_ros.params import read_params_document

    broken = tmp_path / "broken.yaml"
    broken.write_text("/**:\n  ros__parameters:\n    device: cpu\n   tta_votes: 1\n")
    with pytest.raises(ParameterError) as raised:
        read_params_document(broken)
    message = str(raised.value)
    assert raised.value.name == "params_file" and "\n" not in message
    assert f"{broken} is not valid YAML (line 4, column 4)" in message
    with pytest.raises(FileNotFoundError, match="params file not found"):
        read_params_document(tmp_path / "missing.yaml")


def test_unknown_parameter_suggests_the_closest_name():
    with pytest.raises(ParameterError) as raised:
        SegmentParams.from_dict({"max_rang": 80.0})
    assert raised.value.name == "max_rang" and "did you mean 'max_range'?" in str(raised.value)
    with pytest.raises(ParameterError, match="unknown parameter \\(known: "):
        SegmentParams.from_dict({"zzzz": 1})


def test_intensity_field_names_defined_once():
    from elite_ros import cloud, params

    assert params.DEFAULT_INTENSITY_FIELDS is cloud.DEFAULT_INTENSITY_FIELDS
    assert SegmentParams().intensity_fields is cloud.DEFAULT_INTENSITY_FIELDS


def _numbers_of_the_schema() -> list[str]:
    return [name for name, prop in parameter_schema().items() if prop["type"] == "number"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_every_number_parameter_refuses_nan_and_infinity(value):
    """JSON-schema bounds let NaN through (every comparison with NaN is false): `min_range: .nan` used to run
    with no point labelled."""
    names = _numbers_of_the_schema()
    assert {"min_range", "max_range", "intensity_max", "latency_budget_ms"} <= set(names)
    for name in names:
        with pytest.raises(ParameterError, match=rf"invalid parameter '{name}': must be a finite number, got"):
            SegmentParams.from_dict({name: value})
    extrinsic = [1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0, value]
    with pytest.raises(ParameterError, match="'camera.extrinsic': must be a finite number"):
        SegmentParams.from_dict({"camera.extrinsic": extrinsic})


@pytest.mark.parametrize(("text", "problem"), [
    (b"/**:\n  ros__parameters:\n    checkpoint: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 43)"),
    (b"/**:\n  ros__parameters:\n    max_range: 100.0\n    max_range: 50.0\n",
     "is not valid YAML (line 4, column 5): found duplicate key 'max_range'"),
    (b"/**:\n  ros__parameters:\n    filtered_classes: &c [road]\n    x: *c\n",
     "is not valid YAML (line 4, column 8): found alias '*c'"),
])
def test_params_files_that_are_not_utf8_repeat_a_key_or_use_aliases_are_refused_naming_the_file(
        tmp_path: Path, text: bytes, problem: str):
    path = tmp_path / "params.yaml"
    path.write_bytes(text)
    with pytest.raises(ParameterError) as info:
        load_params_file(path)
    assert str(info.value).startswith(f"invalid parameter 'params_file': {path} {problem}"), str(info.value)


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path):
    """0.4 KB of nested aliases names 9**9 strings: it took 44 s and 1 GB to refuse (or accept)."""
    import time

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("/**:\n  ros__parameters:\n    camera:\n" + "".join(f"      {line}\n" for line in lines))
    assert path.stat().st_size < 512
    start = time.perf_counter()
    with pytest.raises(ParameterError, match="found alias"):
        load_params_file(path)
    assert time.perf_counter() - start < 5.0  # a bound for a shared CI machine, not a timing figure


def test_the_nice_parameters_range_is_the_one_set_niceness_accepts():
    from elite_ros.cpu_threads import NICENESS_RANGE

    prop = parameter_schema()["nice"]
    assert (prop["minimum"], prop["maximum"]) == NICENESS_RANGE
