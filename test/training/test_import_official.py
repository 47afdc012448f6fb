"""import_official / safe_unpickle: official ELiTe / 2DPASS weights -> the runtime student, proven equal.

The reference is ../shared/data/official/: the official network's logits on the range-filtered spvnas
scan (1 CPU thread) for the weights in official_student_seed1.{pt,ckpt}.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from official_fixtures import agreement, lightning_checkpoint, official_config, read_scan, save_official, scan_logits
from safetensors import safe_open

from elite_ros.checkpoint import make_metadata, read_metadata, save_checkpoint
from elite_ros.command import run_command
from elite_ros.student import Student
from elite_ros_training import cli
from elite_ros_training.commands import import_official as command
from elite_ros_training.import_official import (
    PROVENANCE,
    OfficialImportError,
    import_official,
    official_to_student_name,
    read_official,
    sha256_of,
)
from elite_ros_training.safe_unpickle import CheckpointReadError, UnsafeCheckpointError, load_checkpoint_file

MIN_ARGMAX_AGREEMENT = 0.999  # issue 12: official argmax on >= 99.9 % of kept points
MAX_LOGIT_DIFFERENCE = 1e-3  # issue 12: logits within 1e-3 (measured 2.8e-5)
MAX_UNTRANSPOSED_AGREEMENT = 0.5  # measured ~10 % without the 1x1x1 transpose


@pytest.fixture(scope="module")
def official(data_dir: Path) -> Path:
    return data_dir / "official"


@pytest.fixture(scope="module")
def scan(data_dir: Path, official: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points (N, 4), keep (N,) bool, official logits (K, 20))."""
    return (read_scan(data_dir), np.load(official / "official_student_seed1_keep.npy"),
            np.load(official / "official_student_seed1_logits.npy"))


@pytest.fixture(scope="module")
def official_state(official: Path) -> dict[str, torch.Tensor]:
    """The official student's state dict (official names, no prefix), read the way torch reads it."""
    return torch.load(official / "official_student_seed1.pt", weights_only=True)


def train_main(argv: list[str]) -> int:
    """`elite-ros-train` with only this subcommand (the others need their own extras), same error policy."""
    parser = argparse.ArgumentParser(prog="elite-ros-train")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


def train_main_exit(argv: list[str]) -> int:
    try:
        return train_main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


def test_the_subcommand_is_registered():
    assert "elite_ros_training.commands.import_official" in cli.SUBCOMMAND_MODULES


def _check_function(path: Path, scan, backend: str) -> dict[str, float]:
    points, keep, reference = scan
    logits, class_id = scan_logits(path, points, backend)
    assert logits.shape == reference.shape and int(keep.sum()) == reference.shape[0]
    return agreement(logits, class_id, reference, keep)


# ------------------------------------------------------------------------------------------ the function
@pytest.mark.parametrize("name, backend", [("official_student_seed1.ckpt", "native"),
                                           ("official_student_seed1.ckpt", "spconv"),
                                           ("official_student_seed1.pt", "native")])
def test_imported_weights_give_the_official_function(official, scan, tmp_path, name, backend):
    if backend == "spconv":
        pytest.importorskip("spconv")
    out = import_official(official / name, tmp_path / "student.safetensors").path
    figures = _check_function(out, scan, backend)
    assert figures["argmax_agreement"] >= MIN_ARGMAX_AGREEMENT, figures
    assert figures["label_agreement"] >= MIN_ARGMAX_AGREEMENT, figures
    assert figures["max_abs_logit_difference"] <= MAX_LOGIT_DIFFERENCE, figures
    metadata = read_metadata(out)
    assert metadata.trained
    assert metadata.training["provenance"] == PROVENANCE
    assert metadata.training["source"] == name
    assert metadata.training["sha256"] == sha256_of(official / name)
    assert metadata.training["ignored"] == {"model_3d.criterion" if name.endswith(".ckpt") else "criterion": 1}


def test_without_the_shortcut_transpose_the_function_differs(official, scan, tmp_path):
    weights = read_official(official / "official_student_seed1.ckpt", transpose_shortcuts=False)
    assert not weights.transposed
    student = Student()
    student.load_state_dict(weights.state, strict=True)
    out = save_checkpoint(tmp_path / "untransposed.safetensors", student, make_metadata(student, trained=True))
    figures = _check_function(out, scan, "native")
    assert figures["argmax_agreement"] < MAX_UNTRANSPOSED_AGREEMENT, figures
    assert figures["max_abs_logit_difference"] > MAX_LOGIT_DIFFERENCE, figures


# ------------------------------------------------------------------------------------------ the mapping
def test_every_official_tensor_is_mapped_or_ignored_one_to_one(official_state):
    ours = Student().state_dict()
    mapped = {key: official_to_student_name(key) for key in official_state}
    unmapped = [key for key, name in mapped.items() if name is None]
    assert unmapped == ["criterion.ce_loss.weight"]
    names = [name for name in mapped.values() if name is not None]
    assert sorted(names) == sorted(ours) and len(set(names)) == len(names)
    for key, name in mapped.items():
        if name is not None:
            assert tuple(official_state[key].shape) == tuple(ours[name].shape), key
    shortcuts = [name for name in names if name.endswith("shortcut_conv.weight")]
    assert len(shortcuts) == 8  # 4 stages x 2 SparseBasicBlocks


def test_only_the_shortcuts_change_and_they_are_transposed(official, official_state):
    weights = read_official(official / "official_student_seed1.pt")
    assert len(weights.transposed) == 8
    for key, tensor in official_state.items():
        name = official_to_student_name(key)
        if name is None:
            continue
        imported = weights.state[name]
        if name in weights.transposed:
            out_channels, in_channels = tensor.shape[0], tensor.shape[-1]
            expected = tensor.reshape(in_channels, out_channels).t().reshape(tensor.shape)
            assert torch.equal(imported, expected) and not torch.equal(imported, tensor), name
        else:
            assert torch.equal(imported, tensor), name


def test_the_safe_reader_reads_what_torch_reads(official):
    for name in ("official_student_seed1.pt", "official_student_seed1.ckpt"):
        ours = load_checkpoint_file(official / name)
        theirs = torch.load(official / name, weights_only=True)
        ours, theirs = ours.get("state_dict", ours), theirs.get("state_dict", theirs)
        assert list(ours) == list(theirs)
        for key in ours:
            assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key


# ------------------------------------------------------------------------------------------ real files
def test_a_realistic_lightning_checkpoint_imports(official, official_state, tmp_path, monkeypatch, capsys):
    from lightning.fabric.utilities.data import AttributeDict

    # a grid other than the default, to see it is read from the config
    config = official_config(min_volume=(-51.2, -51.2, -4.0), max_volume=(51.2, 51.2, 2.4),
                             spatial_shape=(1024, 1024, 64))
    checkpoint = lightning_checkpoint(official_state, config)
    checkpoint["datamodule_hyper_parameters"] = AttributeDict(batch_size=4, data_path="../dataset/sequences/")
    source = save_official(checkpoint, tmp_path / "last.ckpt")
    monkeypatch.setitem(sys.modules, "easydict", None)  # `import easydict` now fails: the reader must not need it
    tree = load_checkpoint_file(source)  # data-only classes as plain dicts, every value intact
    hyper = tree["hyper_parameters"]
    assert type(hyper) is dict and type(hyper["model_params"]) is dict and hyper == config
    assert type(tree["datamodule_hyper_parameters"]) is dict and tree["datamodule_hyper_parameters"]["batch_size"] == 4
    assert tree["loops"]["fit_loop"]["seen_devices"] == {0, 1} and tree["loops"]["fit_loop"]["rng"] == b"\x00\xff"
    momentum = tree["optimizer_states"][0]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, checkpoint["optimizer_states"][0]["state"][0]["momentum_buffer"])

    out = tmp_path / "official.safetensors"
    assert train_main(["import-official", str(source), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "took 240 student tensors (1,933,460 parameters)" in printed
    n_2d = sum(key.startswith("model_2d.") for key in checkpoint["state_dict"])
    assert f"model_2d {n_2d}" in printed and "fusion 4" in printed and "model_3d.criterion 1" in printed
    assert "optimizer_states" in printed and "callbacks" in printed and f"wrote {out}" in printed

    metadata = read_metadata(out)
    assert metadata.trained
    assert metadata.training["ignored"] == {"fusion": 4, "model_2d": n_2d, "model_3d.criterion": 1}
    assert metadata.training["sha256"] == sha256_of(source) and metadata.training["source"] == "last.ckpt"
    assert metadata.voxel["min_bound"] == [-51.2, -51.2, -4.0] and metadata.voxel["max_bound"] == [51.2, 51.2, 2.4]
    assert metadata.voxel["voxel_size"] == pytest.approx(0.1) and metadata.voxel["scales"] == [1, 2, 4, 8, 16]
    # the same tensors as the minimal checkpoint gives
    reference = import_official(official / "official_student_seed1.ckpt", tmp_path / "minimal.safetensors").path
    with safe_open(str(out), "pt") as ours, safe_open(str(reference), "pt") as minimal:
        assert sorted(ours.keys()) == sorted(minimal.keys())
        assert all(torch.equal(ours.get_tensor(k), minimal.get_tensor(k)) for k in ours.keys())


class _Payload:
    """Runs `command` through `function` when unpickled by an unrestricted loader."""

    def __init__(self, function, command: str) -> None:
        self.function, self.command = function, command

    def __reduce__(self):
        return self.function, (self.command,)


@pytest.mark.parametrize("function, named", [(os.system, f"{os.system.__module__}.system"),
                                             (eval, "builtins.eval")])
def test_a_reduce_payload_is_refused_and_never_runs(official_state, tmp_path, capsys, function, named):
    marker = tmp_path / "payload_ran"
    command = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    checkpoint = lightning_checkpoint(official_state, official_config())
    checkpoint["callbacks"]["Evil"] = {"state": _Payload(function, command)}
    source = save_official(checkpoint, tmp_path / "evil.ckpt")

    with pytest.raises(UnsafeCheckpointError, match=named.replace(".", r"\.")):
        import_official(source, tmp_path / "out.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        train_main(["import-official", str(source), str(tmp_path / "out.safetensors")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and named in error and str(source) in error
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def _scaled(tensor: torch.Tensor, factor: int) -> torch.Tensor:
    """The same tensor at `factor` x the width: every 64 / 32 / 128 dimension scaled (256-dim 2DPASS)."""
    shape = [size * factor if size in (32, 64, 128, 256) else size for size in tensor.shape]
    return torch.zeros(shape, dtype=tensor.dtype)


def test_a_6scale_256dimension_checkpoint_is_refused(official_state, tmp_path, capsys):
    wide = {key: _scaled(value, 4) for key, value in official_state.items()}
    for stage in (4, 5):  # 2DPASS "6scale": two more SPV blocks
        wide.update({key.replace("spv_enc.3.", f"spv_enc.{stage}."): value for key, value in wide.items()
                     if key.startswith("spv_enc.3.")})
    config = official_config(hidden=256, scales=(2, 4, 8, 16, 16, 16))
    source = save_official(lightning_checkpoint(wide, config, model_2d_bytes=0), tmp_path / "2dpass_256.ckpt")
    out = tmp_path / "out.safetensors"
    with pytest.raises(OfficialImportError) as error:
        import_official(source, out)
    message = str(error.value)
    assert "channel width 256 (this student: 64)" in message and "6 SPV stages (this student: 4)" in message
    assert "model_params.hiden_size = 256" in message and "scale_list = [2, 4, 8, 16, 16, 16]" in message
    assert train_main_exit(["import-official", str(source), str(out)]) == 2
    assert "channel width 256" in capsys.readouterr().err and not out.exists()


def _unicode(text: str) -> bytes:
    """Pickle opcode BINUNICODE."""
    return b"X" + struct.pack("<I", len(text)) + text.encode()


def test_build_cannot_alter_what_the_reader_hands_out(tmp_path):
    # GLOBAL torch._utils._rebuild_tensor_v2; BUILD (None, {"__defaults__": (1,)}) on it: would change the
    # reader's own function for every later load if it were the function itself
    payload = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}" + _unicode("__defaults__")
               + b"K\x01\x85s\x86b.")
    path = tmp_path / "build.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    with pytest.raises(CheckpointReadError, match="build.ckpt: unreadable pickle"):
        load_checkpoint_file(path)
    from elite_ros_training import safe_unpickle

    assert safe_unpickle._view_storage.__defaults__ is None


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script / save are deprecated
def test_files_that_are_not_checkpoints_are_named(tmp_path, official_state):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x80\x02}q\x00." + os.urandom(64))
    with pytest.raises(CheckpointReadError, match="junk.ckpt: not a torch zip checkpoint"):
        load_checkpoint_file(junk)
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, str(tmp_path / "scripted.pt"))
    with pytest.raises(CheckpointReadError, match="TorchScript"):
        load_checkpoint_file(tmp_path / "scripted.pt")
    no_student = save_official({"state_dict": {"model_2d.weight": torch.zeros(2)}}, tmp_path / "no_student.ckpt")
    with pytest.raises(OfficialImportError, match="no ELiTe / 2DPASS student"):
        read_official(no_student)
    with pytest.raises(OfficialImportError, match="must be a .safetensors"):
        import_official(no_student, tmp_path / "out.pt")
