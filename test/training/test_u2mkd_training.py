"""U2MKD in the training loop: fusion configs, the LiDAR teacher, modality dropout, paired flip, DDP, export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_recorder import LossRecorder
from tiny_data import TINY, TinyFrames

from elite_ros.camera import project_points
from elite_ros.checkpoint import CheckpointError, make_metadata, read_metadata, save_checkpoint
from elite_ros.fusion import FusionStudent
from elite_ros.student import Student, StudentConfig
from elite_ros_training.config import config_from_mapping, merge, named_config, read_config_mapping
from elite_ros_training.data.collate import collate
from elite_ros_training.data.pipeline import PipelineConfig, build_sample
from elite_ros_training.datamodule import ELiTeDataModule
from elite_ros_training.export import export_student, read_training_checkpoint, student_from_checkpoint
from elite_ros_training.fit import fit
from elite_ros_training.module import ELiTeModule
from elite_ros_training.ppmskd import class_weights_from_counts
from elite_ros_training.u2mkd import LidarTeacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_LIDAR = StudentConfig(hidden_channels=8, decoder_channels=16)
TINY_FUSION = {"student": {"fusion": {"widths": [4, 8, 8], "channels": 8}},
               "data": {"pipeline": {"crop_size": [256, 128]}}}
WEIGHTS = class_weights_from_counts(np.ones(20)).tolist()


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """A LiDAR-only runtime checkpoint of the tiny student (random weights stand in for a trained teacher)."""
    torch.manual_seed(7)
    student = Student(TINY_LIDAR)
    path = tmp_path_factory.mktemp("teacher") / "lidar.safetensors"
    return save_checkpoint(path, student, make_metadata(student, trained=True))


def tiny_config(name: str, teacher: Path | None = None, **sections):
    values = merge(merge(read_config_mapping(named_config(name)), TINY), TINY_FUSION)
    if values.get("lidar_teacher") is not None:
        values["lidar_teacher"]["checkpoint"] = str(teacher)
    return config_from_mapping(merge(values, sections))


def tiny_datamodule(config, train: int = 4, val: int = 2) -> ELiTeDataModule:
    return ELiTeDataModule(config, train_frames=TinyFrames(train), val_frames=TinyFrames(val, first_seed=100),
                           progress=False)


@pytest.mark.parametrize("name", ["fusion", "u2mkd", "u2mkd_no_imputation", "u2mkd_no_points_to_image"])
def test_every_fusion_config_runs_a_step_with_a_gradient_for_every_parameter(name, teacher_file):
    config = tiny_config(name, teacher_file)
    data = tiny_datamodule(config)
    batch = collate([data.train_set[i] for i in range(2)], teacher_input_size=data.teacher_input)
    assert batch.images is not None and batch.images.shape[-2:] == (128, 256) and batch.image_present is not None
    module = ELiTeModule.from_config(config, WEIGHTS, total_steps=10)
    assert isinstance(module.student, FusionStudent)
    terms = module.losses(batch)
    assert torch.isfinite(terms.total)
    expected = {"main_ce", "main_lovasz"} | ({"imputation"} if name != "u2mkd_no_imputation" else set())
    if name != "fusion":
        expected |= {"u2mkd_logits"} | {f"u2mkd_stage{k}" for k in range(4)}
    assert set(terms.terms) == expected
    assert terms.total.item() == pytest.approx(sum(v.item() for v in terms.terms.values()), rel=1e-5)
    terms.total.backward()
    without_gradient = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not without_gradient
    assert {n.split(".")[0] for n, p in module.named_parameters() if p.requires_grad} == (
        {"student"} if name == "fusion" else {"student", "u2mkd"})
    if name != "fusion":  # the teacher is frozen and stays in eval mode while the module trains
        module.train()
        assert not module.lidar_teacher.training and not any(p.requires_grad for p in module.lidar_teacher.parameters())


def test_a_batch_with_every_image_withheld_still_gives_every_parameter_a_gradient(teacher_file):
    config = tiny_config("u2mkd", teacher_file, data={"pipeline": {"image_dropout": 1.0}})
    data = tiny_datamodule(config)
    batch = collate([data.train_set[i] for i in range(2)], teacher_input_size=None)
    assert not batch.image_present.any()
    module = ELiTeModule.from_config(config, WEIGHTS, total_steps=10)
    module.losses(batch).total.backward()
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)


def test_the_teacher_must_be_a_lidar_checkpoint_on_the_students_grid(tmp_path, teacher_file):
    fusion_file = save_checkpoint(tmp_path / "fusion.safetensors", FusionStudent())
    config = tiny_config("u2mkd", teacher_file)
    with pytest.raises(CheckpointError, match="model_kind = 'fusion'"):
        LidarTeacher.from_checkpoint(fusion_file, config.student.voxel, (2, 4, 8, 16))
    with pytest.raises(CheckpointError, match="stage_scales"):
        LidarTeacher.from_checkpoint(teacher_file, config.student.voxel, (2, 4, 8))
    with pytest.raises(ValueError, match="needs student.fusion"):
        config_from_mapping(merge(read_config_mapping(named_config("row_a")), {"loss": {"kd": "u2mkd"}}))


def test_a_lidar_checkpoint_initialises_the_fusion_students_3d_branch(teacher_file):
    config = tiny_config("fusion", student={"init_checkpoint": str(teacher_file)})
    module = ELiTeModule.from_config(config, WEIGHTS, total_steps=10)
    teacher = LidarTeacher.from_checkpoint(teacher_file, config.student.voxel, (2, 4, 8, 16))
    for name, value in teacher.network.state_dict().items():
        assert torch.equal(module.student.lidar.state_dict()[name], value), name


def test_the_paired_flip_mirrors_the_points_with_the_image_and_keeps_every_pixel_link():
    frame = TinyFrames(1)[0]
    config = PipelineConfig(crop_size=(256, 128), flip2d_probability=1.0, flip_with_image=True,
                            augment3d=tiny_config("fusion").data.pipeline.augment3d)
    sample = build_sample(frame, config, np.random.default_rng(0), train=True)
    assert sample.crop.flipped
    original = frame.points[sample.ref_index, :3]
    np.testing.assert_allclose(sample.points[:, :3], sample.augmentation.apply(original), atol=1e-5)
    np.testing.assert_allclose(sample.points[:, 1], -original[:, 1], atol=1e-5)  # no rigid motion: only the mirror
    # the links are the projection of the un-augmented points, mirrored with the image
    projected = project_points(original[sample.point_to_pixel], frame.projection, *frame.image.shape[1::-1])
    assert len(projected.index) == len(sample.point_to_pixel)
    expected = sample.crop.to_window(projected.pixels)
    np.testing.assert_array_equal(sample.pixels, expected)


def test_modality_dropout_withholds_images_from_the_input_only():
    frames = TinyFrames(40)
    config = PipelineConfig(crop_size=(256, 128), image_dropout=0.3)
    withheld = [build_sample(frames[i], config, np.random.default_rng(i), train=True).image_withheld for i in range(40)]
    assert 0.1 < np.mean(withheld) < 0.5
    sample = build_sample(frames[0], PipelineConfig(crop_size=(256, 128), image_dropout=1.0), np.random.default_rng(0),
                          train=True)
    assert sample.image_withheld and sample.image is not None  # kept: the imputation loss's target
    assert not build_sample(frames[0], PipelineConfig(crop_size=(256, 128), image_dropout=1.0),
                            np.random.default_rng(0), train=False).image_withheld


@pytest.mark.usefixtures("one_thread_per_process")
def test_two_ddp_processes_of_u2mkd_match_one_process_on_the_same_global_batch(tmp_path, teacher_file):
    """gloo DDP on 2 processes x batch 1 == 1 process x batch 1 x 2 accumulated micro-batches (U2MKD, modality
    dropout and the paired flip on): the same micro-batch losses in the same order, the same weights."""
    runs = {}
    for name, devices, accumulate in (("ddp", 2, 1), ("single", 1, 2)):
        folder = tmp_path / name
        folder.mkdir()
        config = tiny_config("u2mkd", teacher_file, data={"batch_size": 1},
                             trainer={"max_epochs": 1, "out_dir": str(folder), "name": "run",
                                      "accumulate_grad_batches": accumulate})
        fit(config, datamodule=tiny_datamodule(config, train=4), progress=False, accelerator="cpu", devices=devices,
            strategy="ddp_spawn" if devices > 1 else "auto", extra_callbacks=[LossRecorder(folder)])
        runs[name] = folder
    ddp = [json.loads((runs["ddp"] / f"losses_rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((runs["single"] / "losses_rank0.json").read_text())
    assert len(single) == 4 and len(ddp[0]) == len(ddp[1]) == 2
    interleaved = [value for pair in zip(*ddp) for value in pair]
    np.testing.assert_allclose(interleaved, 2 * np.asarray(single), rtol=1e-5)  # callbacks see loss / accumulation
    ddp_weights, single_weights = (torch.load(runs[n] / "weights.pt") for n in ("ddp", "single"))
    assert ddp_weights.keys() == single_weights.keys()
    for name in single_weights:
        torch.testing.assert_close(ddp_weights[name], single_weights[name], rtol=1e-4, atol=1e-6, msg=name)


def test_export_gives_a_segmenter_that_predicts_like_the_training_model(tmp_path, teacher_file):
    from elite_ros.camera import CameraModel
    from elite_ros.cloud import scan_from_arrays
    from elite_ros.segmenter import Segmenter

    config = tiny_config("u2mkd", teacher_file, trainer={"max_epochs": 1, "out_dir": str(tmp_path), "name": "run"})
    data = tiny_datamodule(config)
    result = fit(config, datamodule=data, progress=False, accelerator="cpu")
    out = export_student(result.last_checkpoint, tmp_path / "fusion.safetensors")
    metadata = read_metadata(out)
    assert metadata.model_kind == "fusion" and metadata.camera["pixel_mean"] == list(config.data.pipeline.pixel_mean)
    assert "val_miou_no_image" in metadata.training
    assert set(metadata.training["config"]["loss"]) >= {"u2mkd_logit_weight", "imputation_weight"}
    student, _ = student_from_checkpoint(read_training_checkpoint(result.last_checkpoint))
    segmenter = Segmenter.from_checkpoint(out, device="cpu", backend="native", warmup=False)
    assert isinstance(segmenter.model, FusionStudent)

    frame = TinyFrames(1, first_seed=100)[0]  # a validation frame: whole image, no crop, no augmentation
    camera = CameraModel(frame.projection, frame.image.shape[1], frame.image.shape[0])
    scan = scan_from_arrays(frame.points[:, :3], frame.points[:, 3])
    with_image = segmenter.predict(scan, image=frame.image, camera=camera)
    without = segmenter.predict(scan)
    module = ELiTeModule.from_config(config, WEIGHTS, total_steps=1)
    module.student.load_state_dict(student.state_dict())
    module.eval()
    pipeline = PipelineConfig(crop_size=tuple(frame.image.shape[1::-1]), use_pseudo_labels=False)
    sample = build_sample(frame, pipeline, np.random.default_rng(0), train=False)
    batch = collate([sample], teacher_input_size=None)
    with torch.no_grad():
        logits = module.student_forward(batch).logits.argmax(1).numpy()
        blind = module.student_forward(batch, with_images=False).logits.argmax(1).numpy()
    kept = sample.ref_index
    assert np.mean(with_image.class_id[kept] == logits) >= 0.999
    assert np.mean(without.class_id[kept] == blind) >= 0.999


def test_the_u2mkd_losses_are_scale_free_and_never_move_their_targets():
    from elite_ros_training.u2mkd import feature_distillation_loss, imputation_loss

    teacher = torch.randn(50, 16, requires_grad=True)
    assert feature_distillation_loss(torch.zeros(50, 16), teacher).item() == pytest.approx(1.0)
    assert feature_distillation_loss(teacher.detach() * 3, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_distillation_loss(-teacher.detach(), 100 * teacher).item() == pytest.approx(2.0)
    imputed = torch.zeros(50, 16, requires_grad=True)
    (imputation_loss(imputed, teacher) + feature_distillation_loss(imputed, teacher)).backward()
    assert teacher.grad is None and imputed.grad is not None
    empty = torch.zeros(0, 16, requires_grad=True)
    assert imputation_loss(empty, empty).item() == 0.0 and feature_distillation_loss(empty, empty).item() == 0.0


def test_the_class_weighted_kl_weighs_each_point_by_its_teacher_label():
    from elite_ros_training.ppmskd.losses import kd_divergence
    from elite_ros_training.u2mkd import class_weighted_kl

    # two points, two classes: the teacher says class 0 (p = 0.8) for the first, class 1 (p = 0.9) for the second
    teacher = torch.log(torch.tensor([[0.8, 0.2], [0.1, 0.9]]))
    student = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]])).requires_grad_()
    kl = [0.8 * np.log(0.8 / 0.5) + 0.2 * np.log(0.2 / 0.5), 0.1 * np.log(0.1 / 0.5) + 0.9 * np.log(0.9 / 0.5)]
    weighted = class_weighted_kl(student, teacher, torch.tensor([1.0, 3.0]))
    assert weighted.item() == pytest.approx((1.0 * kl[0] + 3.0 * kl[1]) / 4.0, rel=1e-6)
    # equal weights: the mean KL per point, the unweighted term (kd_divergence x C)
    assert class_weighted_kl(student, teacher, torch.ones(2)).item() == pytest.approx(np.mean(kl), rel=1e-6)
    assert (2 * kd_divergence(student, teacher)).item() == pytest.approx(np.mean(kl), rel=1e-6)
    weighted.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    empty = torch.zeros(0, 2, requires_grad=True)
    assert class_weighted_kl(empty, empty, torch.ones(2)).item() == 0.0
    with pytest.raises(ValueError, match="class_weights"):
        class_weighted_kl(student, teacher, torch.ones(3))


def test_u2mkd_with_class_weighted_kl_runs_a_step(teacher_file):
    config = tiny_config("u2mkd", teacher_file, loss={"u2mkd_logit_class_weighted": True})
    data = tiny_datamodule(config)
    batch = collate([data.train_set[i] for i in range(2)], teacher_input_size=data.teacher_input)
    weights = list(WEIGHTS)
    weights[3] = 5.0
    module = ELiTeModule.from_config(config, weights, total_steps=10)
    assert module.u2mkd.logit_weights.tolist() == pytest.approx(weights)
    terms = module.losses(batch)
    assert torch.isfinite(terms.terms["u2mkd_logits"]) and terms.terms["u2mkd_logits"].item() > 0.0
    plain = ELiTeModule.from_config(tiny_config("u2mkd", teacher_file, loss={"u2mkd_logit_class_weighted": False}),
                                    weights, total_steps=10)
    assert plain.u2mkd.logit_weights.tolist() == [1.0] * len(weights)  # the plain KL: every point alike


def test_the_teacher_right_kl_drops_only_the_points_the_teacher_gets_wrong():
    from elite_ros_training.u2mkd import class_weighted_kl
    from elite_ros_training.u2mkd.losses import teacher_right_or_unlabelled

    # teacher labels: 0, 1, 1; ground truth: 1 (labelled, teacher right), 2 (wrong), 0 (unlabelled)
    teacher = torch.log(torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3]]))
    labels = torch.tensor([1, 2, 0])
    keep = teacher_right_or_unlabelled(teacher, labels)
    assert keep.tolist() == [True, False, True]
    student = torch.log(torch.full((3, 3), 1 / 3)).requires_grad_()
    p = teacher.exp().numpy()
    kl = (p * np.log(p * 3)).sum(axis=1)
    weights = torch.tensor([1.0, 2.0, 4.0])  # the teacher's labels are 1, 1, 1: weight 2 each
    kept = class_weighted_kl(student, teacher, weights, keep)
    assert kept.item() == pytest.approx((kl[0] + kl[2]) / 2, rel=1e-6)
    kept.backward()
    assert student.grad[1].abs().max().item() == 0.0 and student.grad[0].abs().max().item() > 0.0
    none_kept = class_weighted_kl(student, teacher, weights, torch.zeros(3, dtype=torch.bool))
    assert none_kept.item() == 0.0
    with pytest.raises(ValueError, match="keep"):
        class_weighted_kl(student, teacher, weights, torch.ones(2, dtype=torch.bool))


def test_u2mkd_with_the_teacher_right_kl_runs_a_step_and_needs_labels(teacher_file):
    config = tiny_config("u2mkd", teacher_file, loss={"u2mkd_logit_teacher_right_only": True})
    data = tiny_datamodule(config)
    batch = collate([data.train_set[i] for i in range(2)], teacher_input_size=data.teacher_input)
    module = ELiTeModule.from_config(config, WEIGHTS, total_steps=10)
    terms = module.losses(batch)
    assert torch.isfinite(terms.terms["u2mkd_logits"])
    terms.total.backward()
    student = module.student_forward(batch)
    with pytest.raises(ValueError, match="labels"):
        module.u2mkd(student, student)
