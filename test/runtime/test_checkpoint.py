"""Checkpoints (elite_ros/checkpoint.py): safetensors + JSON metadata, strict loading, the bundled default."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from elite_ros import labels
from elite_ros.checkpoint import (
    METADATA_KEY,
    CheckpointError,
    CheckpointMetadata,
    default_checkpoint,
    load_checkpoint,
    make_metadata,
    read_metadata,
    save_checkpoint,
)
from elite_ros.config_loader import dump_dataclass
from elite_ros.student import Student, StudentConfig, StudentInput

SMALL = StudentConfig(hidden_channels=8, decoder_channels=16)


def _model(seed: int, config: StudentConfig = SMALL) -> Student:
    torch.manual_seed(seed)
    model = Student(config, sparse_backend="native")
    for module in model.modules():  # non-trivial BN statistics so a lost buffer would show
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _rewrite(path, tensors=None, metadata_json=None, out=None):
    """Re-save a checkpoint with edited tensors or metadata (what a broken file would hold)."""
    tensors = load_file(str(path)) if tensors is None else tensors
    metadata_json = read_metadata(path).to_json() if metadata_json is None else metadata_json
    out = out or path.with_name("edited.safetensors")
    save_file(tensors, str(out), metadata={METADATA_KEY: metadata_json})
    return out


def test_round_trip_predicts_identically(tmp_path):
    model = _model(0)
    metadata = make_metadata(model, trained=True, intensity_scale=0.5, training={"epochs": 3})
    path = save_checkpoint(tmp_path / "student.safetensors", model, metadata)
    assert [p.name for p in tmp_path.iterdir()] == ["student.safetensors"]  # no temp file left
    restored = _model(1)
    loaded = load_checkpoint(path, restored)
    assert loaded == metadata and loaded.trained and loaded.intensity_scale == 0.5
    for (name, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), name
    torch.manual_seed(2)
    points = torch.cat([torch.rand(300, 3) * 20 - 10, torch.rand(300, 1)], dim=1)
    with torch.inference_mode():
        expected = model(StudentInput.from_points(points)).logits
        actual = restored(StudentInput.from_points(points)).logits
    assert torch.equal(expected, actual)


def test_file_is_plain_safetensors_with_json_metadata(tmp_path):
    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    raw = path.read_bytes()
    header_length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_length])
    metadata = json.loads(header["__metadata__"][METADATA_KEY])
    assert metadata["architecture"] == dump_dataclass(SMALL)
    assert metadata["class_names"] == list(labels.CLASS_NAMES)
    assert metadata["palette"] == labels.palette_rgb().tolist()
    assert metadata["learning_map"]["252"] == 1
    assert metadata["voxel"] == {"voxel_size": 0.1, "min_bound": [-50.0, -50.0, -4.0],
                                 "max_bound": [50.0, 50.0, 2.0], "scales": [1, 2, 4, 8, 16]}
    assert metadata["trained"] is False and metadata["intensity_scale"] == 1.0
    assert metadata["source_commit"]
    assert "input_mlp.0.weight" in header


def test_loading_names_renamed_and_misshaped_keys_all_at_once(tmp_path):
    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    tensors = load_file(str(path))
    tensors["classifier.2.weight_renamed"] = tensors.pop("classifier.2.weight")
    tensors["stages.0.voxel_encoder.0.conv1.weight"] = torch.zeros(8, 3, 3, 3, 9)
    broken = _rewrite(path, tensors=tensors)
    model = _model(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(broken, model)
    message = str(error.value)
    assert "missing keys ['classifier.2.weight']" in message
    assert "unexpected keys ['classifier.2.weight_renamed']" in message
    assert "stages.0.voxel_encoder.0.conv1.weight [8, 3, 3, 3, 9] in file, [8, 3, 3, 3, 8] in model" in message
    assert str(broken) in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_loading_refuses_metadata_that_disagree_naming_the_field(tmp_path):
    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    metadata = json.loads(read_metadata(path).to_json())
    metadata["architecture"]["hidden_channels"] = 16
    broken = _rewrite(path, metadata_json=json.dumps(metadata))
    with pytest.raises(CheckpointError, match=r"architecture.hidden_channels = 16 in file, 8 in model"):
        load_checkpoint(broken, _model(1))

    metadata = json.loads(read_metadata(path).to_json())
    metadata["class_names"] = metadata["class_names"][:5]
    broken = _rewrite(path, metadata_json=json.dumps(metadata))
    with pytest.raises(CheckpointError, match="class_names has 5 names"):
        load_checkpoint(broken, _model(1))

    metadata = json.loads(read_metadata(path).to_json())
    metadata["voxel"]["scales"] = [1, 2, 4]
    broken = _rewrite(path, metadata_json=json.dumps(metadata))
    with pytest.raises(CheckpointError, match=r"voxel.scales \[1, 2, 4\] lack the model's stage scale\(s\) \[8, 16\]"):
        load_checkpoint(broken, _model(1))

    metadata = json.loads(read_metadata(path).to_json())
    metadata["colour"] = "blue"
    broken = _rewrite(path, metadata_json=json.dumps(metadata))
    with pytest.raises(CheckpointError, match="unknown metadata field"):
        load_checkpoint(broken, _model(1))


def test_saving_refuses_metadata_of_another_model_and_writes_nothing(tmp_path):
    other = make_metadata(Student(StudentConfig(hidden_channels=4, decoder_channels=4)))
    with pytest.raises(CheckpointError, match="architecture.hidden_channels"):
        save_checkpoint(tmp_path / "s.safetensors", _model(0), other)
    assert list(tmp_path.iterdir()) == []


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_metadata(tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04 not a safetensors file")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a safetensors file"):
        read_metadata(junk)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(CheckpointError, match="no 'elite_ros' metadata"):
        read_metadata(bare)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        CheckpointMetadata.from_json("{", source="x")


def test_the_bundled_default_checkpoint_is_trained_on_synthetic_data_and_loads(tmp_path, monkeypatch):
    """The package ships a trained student (elite_ros/assets/): float16 storage within 8 MB, metadata that say
    it saw the synthetic world only and give its validation figures; it loads strictly into the default
    architecture, and nothing is generated or written (the cache stays empty)."""
    monkeypatch.setenv("ELITE_ROS_CACHE", str(tmp_path / "cache"))
    path = default_checkpoint()
    assert path.parent.name == "assets" and path.parent.parent.name == "elite_ros"
    assert path.stat().st_size <= 8 * 2**20
    metadata = read_metadata(path)
    assert metadata.trained is True and metadata.architecture == dump_dataclass(StudentConfig())
    training = metadata.training
    assert training["data_licence"].startswith("synthetic world only") and training["storage"] == "float16"
    assert all(Path(p).name.startswith("train_s") for p in training["data"]["train"])
    assert 0.0 < training["val_miou"] <= 1.0 and len(training["val_iou"]) > 0
    offsets = training["label_shift"]["logit_offsets"]  # towards SemanticKITTI's class mix (reference §13)
    assert len(offsets) == 20 and offsets[0] == 0.0
    assert {tensor.dtype for tensor in load_file(str(path)).values() if tensor.is_floating_point()} == {torch.float16}
    model = Student()
    assert load_checkpoint(path, model) == metadata
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())  # upcast
    assert not (tmp_path / "cache").exists()


def test_a_missing_default_checkpoint_is_named(monkeypatch, tmp_path):
    from elite_ros import checkpoint

    monkeypatch.setattr(checkpoint, "DEFAULT_CHECKPOINT_FILE", "absent.safetensors")
    with pytest.raises(CheckpointError, match="absent.safetensors: the bundled default checkpoint is missing"):
        default_checkpoint()


@pytest.mark.parametrize(("name", "value"), [
    ("palette", 5), ("class_names", None), ("class_names", [1, 2]), ("learning_map", []),
    ("learning_map", {"x": 1}), ("intensity_scale", "1"), ("intensity_scale", True), ("trained", "yes"),
    ("voxel", None), ("architecture", [1]), ("palette", [[0, 0, 300]] * 20), ("training", 3),
    ("source_commit", 1), ("format_version", "1"),
])
def test_metadata_of_the_wrong_type_is_refused_naming_the_field(tmp_path, name, value):
    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    metadata = json.loads(read_metadata(path).to_json())
    metadata[name] = value
    text = json.dumps(metadata)
    wrong = rf"x: metadata field\(s\) of the wrong type or out of range: {name} must"
    with pytest.raises(CheckpointError, match=wrong) as raised:
        CheckpointMetadata.from_json(text, source="x")
    assert name in str(raised.value)
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(_rewrite(path, metadata_json=text), _model(1))


def test_other_classes_load_when_their_tables_agree(tmp_path):
    """Any consistent class list is a checkpoint's own business: a 5-class model loads with its tables."""
    import custom_classes

    path = custom_classes.save_checkpoint(tmp_path / "five.safetensors")
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8, num_classes=5))
    metadata = load_checkpoint(path, model)
    classes = metadata.classes
    assert classes.names == tuple(custom_classes.NAMES) and classes.palette.tolist() == custom_classes.PALETTE
    assert classes.to_raw_ids(np.arange(5)).tolist() == [0, 101, 200, 300, 401]
    assert classes.to_training_ids(np.array([100, 401 | (9 << 16), 3, 40])).tolist() == [1, 4, 0, 0]
    # SemanticKITTI's 20 classes with swapped names are just another consistent list
    swapped = json.loads(read_metadata(save_checkpoint(tmp_path / "s.safetensors", _model(0))).to_json())
    swapped["class_names"][1], swapped["class_names"][2] = swapped["class_names"][2], swapped["class_names"][1]
    assert load_checkpoint(_rewrite(tmp_path / "s.safetensors", metadata_json=json.dumps(swapped)),
                           _model(1)).classes.names[1] == "bicycle"


def test_an_inverse_is_derived_when_the_file_has_none(tmp_path):
    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    metadata = json.loads(read_metadata(path).to_json())
    assert metadata["learning_map_inv"]["5"] == 20  # SemanticKITTI's learning_map_inv, not the smallest (13)
    del metadata["learning_map_inv"]  # a file written before the field existed
    assert CheckpointMetadata.from_json(json.dumps(metadata)).classes.to_raw_ids(np.array([5])).tolist() == [20]
    # another learning map: each class's smallest raw id (classes 1..19 <- raw 100..137, two raw ids each)
    metadata["learning_map"] = {"0": 0, **{str(raw): (raw - 100) % 19 + 1 for raw in range(100, 138)}}
    metadata["class_names"], metadata["palette"] = [f"c{i}" for i in range(20)], [[i, i, i] for i in range(20)]
    derived = CheckpointMetadata.from_json(json.dumps(metadata)).classes
    assert derived.to_raw_ids(np.arange(20)).tolist() == [0] + list(range(100, 119))
    assert derived.to_training_ids(np.array([119, 137])).tolist() == [1, 19]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["class_names"].__setitem__(2, "car"), r"class_names must be unique: \['car'\]"),
    (lambda m: m["class_names"].__setitem__(3, " "), r"class_names must be non-empty: id\(s\) \[3\]"),
    (lambda m: m["palette"].pop(), r"palette must hold one \[r, g, b\] per class name \(20\)"),
    (lambda m: m["learning_map"].__setitem__("10", 20), r"learning_map maps raw id\(s\) \[10\] to training id\(s\) "
                                                       r"\[20\] outside the classes 0..19"),
    (lambda m: m["learning_map"].__setitem__("70000", 1), r"learning_map keys must be raw ids 0..65535"),
    (lambda m: m["learning_map"].update({k: 1 for k, v in m["learning_map"].items() if v == 0}),
     r"learning_map maps no raw id to the ignore class 0"),
    (lambda m: m["learning_map_inv"].__setitem__("1", 11), r"learning_map_inv does not invert learning_map at "
                                                         r"training id\(s\) 1 \(raw 11 -> 2\)"),
    (lambda m: m["learning_map_inv"].pop("19"), r"learning_map_inv lacks training id\(s\) \[19\]"),
])
def test_class_tables_that_disagree_are_refused_naming_the_field(tmp_path, edit, message):
    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    metadata = json.loads(read_metadata(path).to_json())
    edit(metadata)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_rewrite(path, metadata_json=json.dumps(metadata)), _model(1))
    with pytest.raises(CheckpointError, match=message):
        CheckpointMetadata.from_json(json.dumps(metadata)).classes  # noqa: B018 - the property raises


# ------------------------------------------------------------------------------------------ hostile files


def _edited_metadata(path, edit) -> str:
    metadata = json.loads(read_metadata(path).to_json())
    edit(metadata)
    return json.dumps(metadata)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["architecture"].update(hidden_channels="64"), "architecture.hidden_channels: must be an integer"),
    (lambda m: m["architecture"].update(hidden_channels=64.5), "architecture.hidden_channels: must be an integer"),
    (lambda m: m["architecture"].update(hidden_channels=True), "architecture.hidden_channels: must be an integer"),
    (lambda m: m["architecture"].update(hidden_channels=2048), "hidden_channels must lie in 1..512, got 2048"),
    (lambda m: m["architecture"].update(decoder_channels=10**9), "decoder_channels must lie in 1..512"),
    (lambda m: m["architecture"].update(stage_scales=list(range(2, 40))), "stage_scales must hold at most 8"),
    (lambda m: m["voxel"].update(voxel_size=1e-7), "voxel: VoxelConfig.voxel_size 1e-07 m gives 1e+09 x 1e+09"),
    (lambda m: m["voxel"].update(voxel_size=64.5), "voxel_size 64.5 m gives 2 x 2 x 0 base cells"),
    (lambda m: m["voxel"].update(max_bound=[float("inf"), 50.0, 2.0]), "voxel: VoxelConfig bounds must be finite"),
    (lambda m: m["voxel"].update(voxel_size=float("nan")), "voxel_size must be a finite number > 0, got nan"),
    (lambda m: m.update(intensity_scale=float("inf")), "intensity_scale: must be a finite positive number"),
    (lambda m: m.update(intensity_scale=1e300), "intensity_scale: must be a finite positive number"),
])
def test_architecture_voxels_and_scale_are_checked_before_anything_is_built(tmp_path, monkeypatch, edit, message):
    """Types and bounds first: a mistyped field is a CheckpointError naming file and field (it was a TypeError),
    a huge network is never allocated, a voxel size that overflows the int64 cell key or an infinite bound
    never loads (they gave wrong voxels / OverflowError)."""
    from elite_ros import segmenter as segmenter_module
    from elite_ros.segmenter import Segmenter

    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    broken = _rewrite(path, metadata_json=_edited_metadata(path, edit))
    built = []
    monkeypatch.setattr(segmenter_module, "Student", lambda *args, **kwargs: built.append(args) or 1 / 0)
    with pytest.raises(CheckpointError) as raised:
        Segmenter.from_checkpoint(broken, device="cpu", warmup=False)
    assert message in str(raised.value) and str(broken) in str(raised.value) and "\n" not in str(raised.value)
    assert built == [], "a model was built before the metadata were checked"


def test_deeply_nested_metadata_is_a_checkpoint_error(tmp_path):
    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    text = read_metadata(path).to_json()
    for depth in (100_000, 100):  # deeper than the JSON parser's recursion; deeper than MAX_METADATA_DEPTH
        deep = text[:-1] + ', "training": {"x": ' + "[" * depth + "]" * depth + "}}"
        with pytest.raises(CheckpointError, match="nests deeper than"):
            read_metadata(_rewrite(path, metadata_json=deep))


@pytest.mark.parametrize(("convert", "message"), [
    (lambda t: t.to(torch.int64), "I64 in file, F64 / F32 / F16 / BF16 expected"),
    (lambda t: t.bool(), "BOOL in file, F64 / F32 / F16 / BF16 expected"),
])
def test_weights_of_another_dtype_are_refused_naming_them(tmp_path, convert, message):
    """int64 and bool weights were cast silently; float16 (export --half) and bfloat16 still load."""
    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    tensors = load_file(str(path))
    name = "classifier.0.weight"
    with pytest.raises(CheckpointError, match=rf"1 keys of the wrong dtype \[{name} {message}\]"):
        load_checkpoint(_rewrite(path, tensors={**tensors, name: convert(tensors[name])}), _model(1))
    for half in (torch.float16, torch.bfloat16):
        halved = {k: v.to(half) if v.is_floating_point() else v for k, v in tensors.items()}
        load_checkpoint(_rewrite(path, tensors=halved), _model(1))


def test_non_finite_weights_are_refused_naming_them(tmp_path):
    """All-NaN weights loaded with trained: true and labelled every point 0."""
    model = _model(0)
    path = save_checkpoint(tmp_path / "s.safetensors", model, make_metadata(model, trained=True))
    tensors = load_file(str(path))
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    with pytest.raises(CheckpointError, match=rf"weights hold NaN or infinite values in \d+ of {len(tensors)} keys"):
        load_checkpoint(_rewrite(path, tensors=nan), _model(1))
    one_inf = dict(tensors)
    one_inf["classifier.2.bias"] = one_inf["classifier.2.bias"].clone()
    one_inf["classifier.2.bias"][3] = float("inf")
    with pytest.raises(CheckpointError, match=r"in 1 of \d+ keys: classifier.2.bias$"):
        load_checkpoint(_rewrite(path, tensors=one_inf), _model(1))


def test_the_cli_names_the_checkpoint_not_the_backend(tmp_path, capsys, luminar_bags):
    """The warm-up of a voxel grid it cannot build used to be reported as "invalid parameter 'backend'"."""
    from elite_ros import cli

    path = save_checkpoint(tmp_path / "s.safetensors", _model(0))
    broken = _rewrite(path, metadata_json=_edited_metadata(path, lambda m: m["voxel"].update(voxel_size=64.5)))
    with pytest.raises(SystemExit) as exited:
        cli.main(["segment", str(luminar_bags["mcap"]), str(tmp_path / "out"), "--checkpoint", str(broken),
                  "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"error: invalid parameter 'checkpoint': {broken}: metadata field" in err
    assert "voxel_size 64.5" in err and "backend" not in err
