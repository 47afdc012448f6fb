"""training/module.py + datamodule + fit: steps, schedule, NaN guard, every ablation row, DDP, resume, export."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_recorder import LossRecorder
from tiny_data import TINY, TINY_TEACHER, TinyFrames, write_tiny_sequence

from elite_ros.checkpoint import read_metadata
from elite_ros.segmenter import Segmenter
from elite_ros_training.cli import main as train_cli
from elite_ros_training.config import config_from_mapping, merge, named_config, read_config_mapping
from elite_ros_training.data.collate import collate
from elite_ros_training.datamodule import ELiTeDataModule
from elite_ros_training.export import ExportError, export_student, read_training_checkpoint, student_from_checkpoint
from elite_ros_training.fit import fit
from elite_ros_training.label_shift import label_shift_offsets
from elite_ros_training.module import RUN_KEY, ELiTeModule, cosine_factor
from elite_ros_training.ppmskd import class_weights_from_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(row: str = "row_a", **sections):
    values = merge(read_config_mapping(named_config(row)), TINY)
    if values.get("teacher") is not None:
        values = merge(values, {"teacher": TINY_TEACHER})
    return config_from_mapping(merge(values, sections))


def tiny_datamodule(config, train: int = 4, val: int = 2, **frames):
    camera = config.teacher is not None
    return ELiTeDataModule(config, train_frames=TinyFrames(train, camera=camera, **frames),
                           val_frames=TinyFrames(val, first_seed=100, camera=False), progress=False)


def test_cosine_schedule_with_and_without_warmup():
    assert cosine_factor(0, 100) == 1.0
    assert cosine_factor(50, 100) == pytest.approx(0.5)
    assert cosine_factor(100, 100) == pytest.approx(0.0)
    assert [cosine_factor(k, 100, 4) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine_factor(4, 100, 4) == 1.0 and cosine_factor(52, 100, 4) == pytest.approx(0.5)


@pytest.mark.parametrize("row", ["row_a", "row_b", "row_c", "row_d", "row_e", "row_f", "row_g", "row_h", "row_i",
                                 "row_j", "row_k", "row_l"])
def test_every_ablation_row_builds_its_model_and_runs_one_step(row):
    config = tiny_config(row)
    camera = config.teacher is not None
    data = tiny_datamodule(config, pseudo=row == "row_l") if camera else tiny_datamodule(config)
    batch = collate([data.train_set[i] for i in range(2)], teacher_input_size=data.teacher_input)
    assert (batch.pseudo_labels is not None) == (row == "row_l")
    module = ELiTeModule.from_config(config, class_weights_from_counts(np.ones(20)).tolist(), total_steps=10)
    terms = module.losses(batch)
    assert torch.isfinite(terms.total)
    assert terms.total.item() == pytest.approx(sum(v.item() for v in terms.terms.values()), rel=1e-5)
    terms.total.backward()
    without_gradient = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not without_gradient  # DDP (find_unused_parameters off) needs a gradient for every one
    trained = {n.split(".")[0] for n, p in module.named_parameters() if p.requires_grad}
    assert trained == ({"student", "ppmskd", "teacher"} if camera and row not in ("row_b", "row_c", "row_d", "row_e")
                       else {"student", "ppmskd"} if camera else {"student"})
    if camera:
        distilled = {name.split("_")[0] for name in terms.terms if name.startswith("stage")}
        assert distilled == ({"stage3"} if row == "row_b" else {"stage0", "stage1", "stage2", "stage3"})
        assert "orth" in terms.terms and "multi_2d" in terms.terms
    else:
        assert module.teacher is None and set(terms.terms) == {"main_ce", "main_lovasz"}


def test_fit_logs_every_term_writes_checkpoints_and_learns(tmp_path):
    config = tiny_config("row_l", trainer={"max_epochs": 3, "out_dir": str(tmp_path), "name": "run"})
    data = tiny_datamodule(config, train=6, pseudo=True)
    result = fit(config, datamodule=data, progress=False, accelerator="cpu")
    assert result.last_checkpoint.is_file() and result.best_checkpoint.is_file()
    assert result.global_step == 3 * 3  # 6 frames / batch 2, 3 epochs
    rows = (result.log_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for term in ("train/loss", "train/orth", "val/mIoU", "lr-SGD"):
        assert any(column.startswith(term) for column in header), (term, header)
    assert any(column.startswith("train/") and "kd" in column for column in header)
    assert 0.0 <= result.best_miou <= 1.0
    losses = [float(v) for v in _column(result.log_dir / "csv" / "metrics.csv", "train/loss")]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def _column(csv_path: Path, name: str) -> list[str]:
    lines = csv_path.read_text().splitlines()
    index = lines[0].split(",").index(name)
    return [row.split(",")[index] for row in lines[1:] if row.split(",")[index] != ""]


def test_a_non_finite_gradient_skips_the_update():
    config = tiny_config("row_a")
    data = tiny_datamodule(config)
    module = ELiTeModule.from_config(config, class_weights_from_counts(np.ones(20)).tolist(), total_steps=10)
    optimizer = module.configure_optimizers()["optimizer"]
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    batch = collate([data.train_set[i] for i in range(2)], teacher_input_size=None)
    module.losses(batch).total.backward()
    next(module.student.parameters()).grad[0] = math.nan
    module.on_before_optimizer_step(optimizer)
    optimizer.step()
    assert module.skipped_steps == 1
    assert all(torch.equal(before[n], p) for n, p in module.named_parameters())


def test_export_gives_a_segmenter_that_predicts_like_the_module_in_eval_mode(tmp_path):
    config = tiny_config("row_a", trainer={"max_epochs": 1, "out_dir": str(tmp_path), "name": "run"})
    data = tiny_datamodule(config)
    result = fit(config, datamodule=data, progress=False, accelerator="cpu")
    half = export_student(result.last_checkpoint, tmp_path / "half.safetensors", half=True)
    full = export_student(result.last_checkpoint, tmp_path / "full.safetensors")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    out = tmp_path / "full.safetensors"
    metadata = read_metadata(out)
    assert metadata.trained is True and metadata.training["config"]["student"]["architecture"]["hidden_channels"] == 8
    assert metadata.training["global_step"] == 2 and metadata.training["data"]["train_frames"] == 4
    assert metadata.training["val_miou"] == pytest.approx(result.best_miou)
    student, _ = student_from_checkpoint(read_training_checkpoint(result.last_checkpoint))
    segmenter = Segmenter.from_checkpoint(out, device="cpu", backend="native", warmup=False)
    sample = data.val_set[0]
    from elite_ros.segmenter import scan_from_arrays

    prediction = segmenter.predict(scan_from_arrays(sample.points[:, :3], sample.points[:, 3]))
    batch = collate([sample], teacher_input_size=None)
    with torch.no_grad():
        module = ELiTeModule.from_config(config, [1.0] * 20, total_steps=1)
        module.student.load_state_dict(student.state_dict())
        logits = module.eval().student_forward(batch).logits
    agreement = np.mean(prediction.class_id == logits.argmax(1).numpy())
    assert agreement >= 0.999, agreement
    halved = Segmenter.from_checkpoint(half, device="cpu", backend="native", warmup=False)
    assert halved.model.classifier[0].weight.dtype == torch.float32  # upcast on loading
    assert np.mean(halved.predict(scan_from_arrays(sample.points[:, :3], sample.points[:, 3])).class_id
                   == prediction.class_id) >= 0.99


def test_export_folds_the_label_shift_correction_into_the_output_biases(tmp_path):
    from safetensors.torch import load_file

    target = [0, 40, 1, 1, 2, 2, 1, 1, 1, 200, 10, 150, 5, 200, 80, 400, 10, 120, 4, 1]  # a KITTI-like mix
    config = tiny_config("row_a", data={"target_class_counts": target},
                         trainer={"max_epochs": 1, "out_dir": str(tmp_path), "name": "run"})
    data = tiny_datamodule(config)
    result = fit(config, datamodule=data, progress=False, accelerator="cpu")
    shifted, raw = tmp_path / "shifted.safetensors", tmp_path / "raw.safetensors"
    assert train_cli(["export", str(result.last_checkpoint), str(shifted)]) == 0
    assert train_cli(["export", str(result.last_checkpoint), str(raw), "--no-label-shift"]) == 0
    training = read_metadata(shifted).training
    recorded, counts = training["label_shift"], data.class_counts().tolist()
    assert training["data"]["class_counts"] == counts and recorded["target_class_counts"] == target
    offsets = label_shift_offsets(counts, target)
    assert recorded["logit_offsets"] == pytest.approx(offsets.tolist(), abs=1e-6)
    assert "label_shift" not in read_metadata(raw).training
    shifted_tensors, raw_tensors = load_file(shifted), load_file(raw)
    bias = "classifier.2.bias"
    assert torch.allclose(shifted_tensors[bias] - raw_tensors[bias], torch.tensor(offsets, dtype=torch.float32),
                          atol=1e-5)
    assert all(torch.equal(shifted_tensors[k], raw_tensors[k]) for k in raw_tensors if k != bias)
    # a training checkpoint without the recorded counts (an older run) is refused, naming the way out
    old = read_training_checkpoint(result.last_checkpoint)
    del old[RUN_KEY]["data"]["class_counts"]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(ExportError, match="no class counts.*--no-label-shift"):
        export_student(tmp_path / "old.ckpt", tmp_path / "old.safetensors")


def _fit_command(folder: Path, out: Path, epochs: int, resume: bool = False) -> list[str]:
    command = [sys.executable, "-m", "elite_ros_training.cli", "fit", "--config", "row_a", "--data", str(folder),
               "--no-progress", "--accelerator", "cpu"]
    overrides = {"trainer.max_epochs": epochs, "trainer.out_dir": str(out), "trainer.name": "run",
                 "student.architecture.hidden_channels": 8, "student.architecture.decoder_channels": 16,
                 "data.batch_size": 2, "data.num_workers": 0, "data.class_counts": "null", "optim.lr": 0.05}
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    return command + (["--resume", "last"] if resume else [])


def _student_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = read_training_checkpoint(checkpoint)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("student.")}


def test_a_killed_run_resumed_from_its_last_checkpoint_reaches_the_same_weights(tmp_path):
    folder = write_tiny_sequence(tmp_path / "seq", count=4)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    straight = tmp_path / "straight"
    subprocess.run(_fit_command(folder, straight, epochs=4), check=True, env=env, capture_output=True, timeout=600)
    expected = _student_weights(straight / "run" / "version_0" / "checkpoints" / "last.ckpt")

    killed = tmp_path / "killed"
    process = subprocess.Popen(_fit_command(folder, killed, epochs=4), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    last = killed / "run" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and not last.is_file():
        time.sleep(0.02)
    process.send_signal(signal.SIGSTOP)  # frozen at once (mid-epoch 2 at the latest), then killed
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = read_training_checkpoint(last)["global_step"]
    assert interrupted_at < 8, "the run finished before it could be killed"
    subprocess.run(_fit_command(folder, killed, epochs=4, resume=True), check=True, env=env, capture_output=True,
                   timeout=600)
    resumed = _student_weights(last)
    assert read_training_checkpoint(last)["global_step"] == 8
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.usefixtures("one_thread_per_process")
def test_two_ddp_processes_match_one_process_on_the_same_global_batch(tmp_path):
    """gloo DDP on 2 processes x batch 1 == 1 process x batch 1 x 2 accumulated micro-batches: the same
    micro-batch losses (in the same order) and the same weights after 3 optimiser steps."""
    sections = {"data": {"batch_size": 1}, "optim": {"warmup_steps": 0}, "trainer": {"max_epochs": 1}}
    runs = {}
    for name, devices, accumulate in (("ddp", 2, 1), ("single", 1, 2)):
        folder = tmp_path / name
        folder.mkdir()
        config = tiny_config("row_l", **merge(sections, {"trainer": {"out_dir": str(folder), "name": "run",
                                                                     "accumulate_grad_batches": accumulate}}))
        data = tiny_datamodule(config, train=6, val=2, pseudo=True)
        fit(config, datamodule=data, progress=False, accelerator="cpu", devices=devices,
            strategy="ddp_spawn" if devices > 1 else "auto", extra_callbacks=[LossRecorder(folder)])
        runs[name] = folder
    ddp0 = json.loads((runs["ddp"] / "losses_rank0.json").read_text())
    ddp1 = json.loads((runs["ddp"] / "losses_rank1.json").read_text())
    single = json.loads((runs["single"] / "losses_rank0.json").read_text())
    assert len(single) == 6 and len(ddp0) == len(ddp1) == 3
    interleaved = [value for pair in zip(ddp0, ddp1) for value in pair]
    # Lightning hands callbacks the loss divided by the accumulation factor (2)
    np.testing.assert_allclose(interleaved, 2 * np.asarray(single), rtol=1e-5)
    ddp_weights = torch.load(runs["ddp"] / "weights.pt")
    single_weights = torch.load(runs["single"] / "weights.pt")
    assert ddp_weights.keys() == single_weights.keys()
    for name in single_weights:
        torch.testing.assert_close(ddp_weights[name], single_weights[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_validation_metric_equals_elite_ros_evaluate_on_the_same_data(tmp_path):
    from elite_ros_training.cli import main as train_main
    from elite_ros_training.data.dataset import open_frames

    folder = write_tiny_sequence(tmp_path / "val", count=3, first_seed=50, points=3000)
    # with a label-shift target, --no-label-shift scores the network as trained, as val/mIoU was measured
    config = tiny_config("row_a", data={"target_class_counts": [0] + [1] * 19},
                         trainer={"max_epochs": 2, "out_dir": str(tmp_path), "name": "run"})
    data = ELiTeDataModule(config, train_frames=TinyFrames(4, camera=False),
                           val_frames=open_frames(folder, images=False), progress=False)
    result = fit(config, datamodule=data, progress=False, accelerator="cpu")
    run = read_training_checkpoint(result.last_checkpoint)["elite_ros"]
    assert run["val_miou"] is not None
    report = tmp_path / "report"
    assert train_main(["validate", "--checkpoint", str(result.last_checkpoint), "--data", str(folder),
                       "--report", str(report), "--no-progress", "--device", "cpu", "--no-label-shift"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(run["val_miou"], abs=1e-6)
    for name, value in run["val_iou"].items():
        expected = None if value is None else pytest.approx(value, abs=1e-6)
        assert metrics["iou"][name] == expected, name
    assert (report / "report.md").is_file()


def test_the_cli_runs_two_ddp_processes_on_the_cpu(tmp_path):
    """`fit --devices 2`: Lightning starts the second process itself (gloo); each takes half the frames."""
    folder = write_tiny_sequence(tmp_path / "seq", count=4)
    command = _fit_command(folder, tmp_path / "ddp", epochs=1) + ["--devices", "2", "--set", "data.batch_size=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    last = read_training_checkpoint(tmp_path / "ddp" / "run" / "version_0" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 2  # 4 frames / (2 processes x batch 1)
    assert last["hyper_parameters"]["world_size"] == 2
