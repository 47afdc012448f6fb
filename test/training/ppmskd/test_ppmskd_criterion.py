"""PPMSKD criterion: term composition and weights, modes, gradient paths, dense pseudo labels, empty cases."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from elite_ros.student import StageFeatures, Student, StudentConfig, StudentInput, StudentOutput
from elite_ros.voxel import voxelise
from elite_ros_training.data.collate import Batch
from elite_ros_training.patch_decoders import gather_pixels
from elite_ros_training.ppmskd import PPMSKD, KDMode, LossConfig, LossTerms, lovasz_softmax, voxel_majority_labels
from elite_ros_training.teacher import TeacherConfig, build_teacher

NUM_CLASSES = 20
STUDENT_CHANNELS = 8
TEACHER_CHANNELS = 6
HEIGHT, WIDTH = 6, 10
VOXELS_PER_STAGE = (60, 30, 12, 5)


def make_batch(points_per_sample=(70, 50), projected=(30, 20), seed=0, pseudo=False, labelled=True,
               crop=(HEIGHT, WIDTH)) -> Batch:
    """A batch of random points, labels and projected pixels (teacher crop `crop` = (height, width))."""
    height, width = crop
    generator = torch.Generator().manual_seed(seed)
    counts = torch.tensor(points_per_sample)
    total = int(counts.sum())
    labels = torch.randint(0, NUM_CLASSES, (total,), generator=generator)
    if not labelled:
        labels.zero_()
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    point_to_pixel = [torch.randperm(int(n), generator=generator)[:k] for n, k in zip(counts, projected, strict=True)]
    pixels = [torch.stack([torch.randint(0, height, (k,), generator=generator),
                           torch.randint(0, width, (k,), generator=generator)], 1) for k in projected]
    pixel_labels = torch.cat([labels[offsets[b]:offsets[b + 1]][idx] for b, idx in enumerate(point_to_pixel)])
    pseudo_labels = None
    if pseudo:
        pseudo_labels = torch.randint(0, NUM_CLASSES, (len(counts), height, width), generator=generator)
        if not labelled:
            pseudo_labels.zero_()
    return Batch(points=torch.randn(total, 4, generator=generator),
                 batch_index=torch.repeat_interleave(torch.arange(len(counts)), counts),
                 labels=labels, ref_index=torch.arange(total), point_offsets=offsets, images=None,
                 image_size=(height, width), pixels=pixels, point_to_pixel=point_to_pixel,
                 pixel_labels=pixel_labels, pseudo_labels=pseudo_labels,
                 frame_ids=[f"{b:06d}" for b in range(len(counts))], num_scan_points=counts.clone())


def make_student(batch: Batch, seed=1) -> StudentOutput:
    """Leaf tensors standing for the student's logits and stage voxel features."""
    generator = torch.Generator().manual_seed(seed)
    num_points = batch.labels.shape[0]
    stages = [StageFeatures(voxel_features=torch.randn(m, STUDENT_CHANNELS, generator=generator).requires_grad_(),
                            point_to_voxel=torch.randint(0, m, (num_points,), generator=generator), scale=2 ** k)
              for k, m in enumerate(VOXELS_PER_STAGE)]
    return StudentOutput(logits=torch.randn(num_points, NUM_CLASSES, generator=generator).requires_grad_(),
                         stages=stages)


def make_maps(batch: Batch, seed=2, channels=TEACHER_CHANNELS) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch.batch_size, channels, HEIGHT, WIDTH, generator=generator).requires_grad_()
            for _ in VOXELS_PER_STAGE]


def make_criterion(kd=KDMode.MSKD, **weights) -> PPMSKD:
    torch.manual_seed(0)
    class_weights = torch.linspace(0.5, 3.0, NUM_CLASSES)
    class_weights[0] = 0.0
    return PPMSKD(LossConfig(kd=kd, **weights), class_weights, num_classes=NUM_CLASSES,
                  student_channels=STUDENT_CHANNELS, teacher_channels=TEACHER_CHANNELS, num_stages=4)


def seg(logits, labels, weights, lovasz_weight):
    """Independent CE (PyTorch's weighted mean) + lovasz_weight x Lovasz-softmax."""
    return (F.cross_entropy(logits, labels, weight=weights, ignore_index=0)
            + lovasz_weight * lovasz_softmax(torch.softmax(logits, 1), labels))


def kl_mean(student, teacher):
    return F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="sum") / student.numel()


def expected_terms(criterion: PPMSKD, student: StudentOutput, batch: Batch, maps, dense: bool) -> dict[str, float]:
    """Every term recomputed from the heads, with the weights written out."""
    config, weights = criterion.config, criterion.class_weights
    expected = {"main_ce": F.cross_entropy(student.logits, batch.labels, weight=weights, ignore_index=0),
                "main_lovasz": config.main_lovasz_weight * lovasz_softmax(torch.softmax(student.logits, 1),
                                                                          batch.labels)}
    projected = batch.point_to_pixel_global()
    gathered = [gather_pixels(m, batch.pixels) for m in maps]
    if dense:
        features = [m.permute(0, 2, 3, 1).reshape(-1, TEACHER_CHANNELS) for m in maps]
        target = batch.pseudo_labels.reshape(-1)
    else:
        features, target = gathered, batch.pixel_labels
    for k in criterion.distilled_stages:
        stage = student.stages[k]
        logits_3d = criterion.heads_3d[str(k)](stage.voxel_features)
        voxel_labels = voxel_majority_labels(batch.labels, stage.point_to_voxel, logits_3d.shape[0], NUM_CLASSES)
        expected[f"stage{k}_3d"] = config.stage_3d_weight * seg(logits_3d, voxel_labels, weights,
                                                                config.stage_lovasz_weight)
        head_2d = criterion.heads_2d[str(k)]
        expected[f"stage{k}_2d"] = config.seg2d_weight / 4 * seg(head_2d(features[k]), target, weights, 1.0)
        student_points = logits_3d[stage.point_to_voxel[projected]]
        expected[f"stage{k}_kd"] = config.kd_weight / 4 * kl_mean(student_points, head_2d(gathered[k]))
    layers = criterion.classifier_2d.layers
    expected["multi_2d"] = config.multi2d_weight * seg(layers(torch.cat(features, 1)), target, weights, 1.0)
    return {name: value.item() for name, value in expected.items()}


# ------------------------------------------------------------------------------------------ heads
def test_parameter_counts_match_the_reference():
    criterion = PPMSKD(LossConfig(), torch.ones(20), teacher_channels=96)  # student 64 channels, 4 stages

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(criterion.heads_3d) == 43_600
    assert count(criterion.heads_2d) == 89_936
    assert count(criterion.classifier_2d) == 77_780
    assert count(criterion) == 211_316  # docs/reference.md §4: xModalKD total
    assert [tuple(m.weight.shape) for m in criterion.heads_2d["0"] if isinstance(m, torch.nn.Linear)] == \
        [(192, 96), (20, 192)]
    assert [tuple(m.weight.shape) for m in criterion.classifier_2d.layers if isinstance(m, torch.nn.Linear)] == \
        [(192, 384), (20, 192)]
    single = PPMSKD(LossConfig(kd=KDMode.KD), torch.ones(20), teacher_channels=96)
    assert list(single.heads_3d) == ["3"] and list(single.heads_2d) == ["3"]
    assert count(single) == 10_900 + 22_484 + 77_780
    assert count(PPMSKD(LossConfig(kd=KDMode.NONE), torch.ones(20))) == 0


def test_construction_errors():
    with pytest.raises(ValueError, match="teacher_channels"):
        PPMSKD(LossConfig(kd=KDMode.MSKD), torch.ones(20))
    with pytest.raises(ValueError, match="class_weights"):
        PPMSKD(LossConfig(kd=KDMode.NONE), torch.ones(19))
    with pytest.raises(ValueError, match="kd_weight"):
        LossConfig(kd_weight=-1.0)
    assert LossConfig(kd="kd").kd is KDMode.KD


# ------------------------------------------------------------------------------------------ composition
def test_mskd_terms_and_weights_sparse_labels():
    batch = make_batch()
    student, maps = make_student(batch), make_maps(batch)
    criterion = make_criterion()
    result = criterion(student, batch, maps)
    names = ["main_ce", "main_lovasz"] + [f"stage{k}_{t}" for k in range(4) for t in ("3d", "2d", "kd")] + ["multi_2d"]
    assert list(result.terms) == names
    expected = expected_terms(criterion, student, batch, maps, dense=False)
    assert {n: v.item() for n, v in result.terms.items()} == pytest.approx(expected, rel=1e-5)
    assert result.total.item() == pytest.approx(sum(expected.values()), rel=1e-5)
    assert all(v.ndim == 0 for v in result.terms.values())


def test_weights_scale_their_terms():
    batch = make_batch(seed=3)
    student, maps = make_student(batch), make_maps(batch)
    default = make_criterion()(student, batch, maps).terms
    weights = dict(main_lovasz_weight=0.5, stage_lovasz_weight=0.0, stage_3d_weight=2.0, seg2d_weight=4.0,
                   kd_weight=1.0, multi2d_weight=3.0)
    criterion = make_criterion(**weights)
    scaled = criterion(student, batch, maps).terms
    assert scaled["main_ce"].item() == pytest.approx(default["main_ce"].item())
    assert scaled["main_lovasz"].item() == pytest.approx(5 * default["main_lovasz"].item(), rel=1e-5)
    for k in range(4):
        assert scaled[f"stage{k}_2d"].item() == pytest.approx(4 * default[f"stage{k}_2d"].item(), rel=1e-5)
        assert scaled[f"stage{k}_kd"].item() == pytest.approx(20 * default[f"stage{k}_kd"].item(), rel=1e-5)
    assert scaled["multi_2d"].item() == pytest.approx(3 * default["multi_2d"].item(), rel=1e-5)
    expected = expected_terms(criterion, student, batch, maps, dense=False)
    assert {n: v.item() for n, v in scaled.items()} == pytest.approx(expected, rel=1e-5)


def test_kd_mode_is_mskd_on_the_last_stage():
    batch = make_batch(seed=4)
    student, maps = make_student(batch), make_maps(batch)
    criterion = make_criterion(KDMode.KD)
    result = criterion(student, batch, maps)
    assert list(result.terms) == ["main_ce", "main_lovasz", "stage3_3d", "stage3_2d", "stage3_kd", "multi_2d"]
    expected = expected_terms(criterion, student, batch, maps, dense=False)  # per-stage weights / 4, as MSKD
    assert {n: v.item() for n, v in result.terms.items()} == pytest.approx(expected, rel=1e-5)
    result.total.backward()
    # every teacher stage still gets a gradient (through the multi-stage classifier), as every decoder must
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)
    assert all(s.voxel_features.grad is None for s in student.stages[:3])


def test_none_mode_is_the_student_alone():
    batch = make_batch(seed=5)
    student = make_student(batch)
    criterion = PPMSKD(LossConfig(kd=KDMode.NONE), make_criterion().class_weights, num_classes=NUM_CLASSES,
                       student_channels=STUDENT_CHANNELS)
    result = criterion(student, batch)
    assert list(result.terms) == ["main_ce", "main_lovasz"]
    expected = (F.cross_entropy(student.logits, batch.labels, weight=criterion.class_weights, ignore_index=0)
                + 0.1 * lovasz_softmax(torch.softmax(student.logits, 1), batch.labels))
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="teacher_maps must be None"):
        criterion(student, batch, make_maps(batch))


def test_teacher_maps_are_checked():
    batch = make_batch(seed=6)
    student, criterion = make_student(batch), make_criterion()
    with pytest.raises(ValueError, match="needs the teacher"):
        criterion(student, batch, None)
    with pytest.raises(ValueError, match="3 teacher stage maps"):
        criterion(student, batch, make_maps(batch)[:3])
    with pytest.raises(ValueError, match="Ct=6"):
        criterion(student, batch, make_maps(batch, channels=5))
    with pytest.raises(ValueError, match="has 3 stages, expected 4"):
        criterion(StudentOutput(student.logits, student.stages[:3]), batch, make_maps(batch))


def test_with_term():
    batch = make_batch(seed=7)
    result = make_criterion()(make_student(batch), batch, make_maps(batch))
    extended = result.with_term("orth", torch.tensor(0.5))
    assert list(extended.terms)[-1] == "orth" and "orth" not in result.terms
    assert extended.total.item() == pytest.approx(result.total.item() + 0.5)
    with pytest.raises(ValueError, match="already"):
        extended.with_term("orth", torch.tensor(1.0))
    with pytest.raises(ValueError, match="at least one"):
        LossTerms.from_terms({})


# ------------------------------------------------------------------------------------------ gradient paths
def _grads(term, tensors):
    return torch.autograd.grad(term, tensors, retain_graph=True, allow_unused=True)


@pytest.mark.parametrize("pseudo", [False, True])
def test_gradient_paths(pseudo):
    batch = make_batch(seed=8, pseudo=pseudo)
    student, maps = make_student(batch), make_maps(batch)
    criterion = make_criterion()
    terms = criterion(student, batch, maps).terms
    student_tensors = [student.logits] + [s.voxel_features for s in student.stages]
    for k in range(4):
        features = student.stages[k].voxel_features
        head_2d = list(criterion.heads_2d[str(k)].parameters())
        head_3d = list(criterion.heads_3d[str(k)].parameters())
        # KD: the student (and its 3D head) learns, the teacher's maps and 2D head never do
        kd = _grads(terms[f"stage{k}_kd"], [features, *maps, *head_2d, *head_3d])
        assert kd[0] is not None and kd[0].abs().sum() > 0
        assert all(g is None for g in kd[1:5 + len(head_2d)])
        assert all(g is not None for g in kd[5 + len(head_2d):])
        # 2D stage loss: the teacher's map of that stage, nothing of the student
        two_d = _grads(terms[f"stage{k}_2d"], [*student_tensors, maps[k]])
        assert all(g is None for g in two_d[:-1]) and two_d[-1].abs().sum() > 0
        # 3D stage loss: the student's stage features, nothing of the teacher
        three_d = _grads(terms[f"stage{k}_3d"], [features, *maps])
        assert three_d[0].abs().sum() > 0 and all(g is None for g in three_d[1:])
    multi = _grads(terms["multi_2d"], [*student_tensors, *maps])
    assert all(g is None for g in multi[:5]) and all(g.abs().sum() > 0 for g in multi[5:])
    main = _grads(terms["main_ce"] + terms["main_lovasz"], [*student_tensors, *maps])
    assert main[0].abs().sum() > 0 and all(g is None for g in main[1:])


# ------------------------------------------------------------------------------------------ dense pseudo labels
def test_dense_pseudo_labels():
    batch = make_batch(seed=9, pseudo=True)
    student, maps = make_student(batch), make_maps(batch)
    criterion = make_criterion()
    result = criterion(student, batch, maps)
    expected = expected_terms(criterion, student, batch, maps, dense=True)
    assert {n: v.item() for n, v in result.terms.items()} == pytest.approx(expected, rel=1e-5)
    # the 2D target really is the dense one: the sparse batch gives other 2D terms but the same KD terms
    sparse = criterion(student, make_batch(seed=9), maps).terms
    assert sparse["stage0_2d"].item() != pytest.approx(result.terms["stage0_2d"].item(), rel=1e-3)
    for k in range(4):
        assert sparse[f"stage{k}_kd"].item() == pytest.approx(result.terms[f"stage{k}_kd"].item(), rel=1e-5)
    with pytest.raises(ValueError, match="pseudo labels"):
        bad = make_batch(seed=9, pseudo=True)
        bad.pseudo_labels = bad.pseudo_labels[:, :-1]
        criterion(student, bad, maps)


def test_dense_pixels_per_image_samples_labelled_pixels_and_keeps_kd_exact():
    from elite_ros_training.ppmskd.criterion import sample_labelled_pixels

    batch = make_batch(seed=9, pseudo=True)
    labels = batch.pseudo_labels
    torch.manual_seed(3)
    sample = sample_labelled_pixels(labels, 10)
    flat = labels.reshape(-1)
    assert sample.numel() <= 10 * batch.batch_size and (flat[sample] > 0).all()
    assert torch.equal(sample, torch.unique(sample))  # without replacement, sorted
    huge = sample_labelled_pixels(labels, 10**6)  # more than there are: every labelled pixel
    assert torch.equal(huge, torch.nonzero(flat > 0).flatten())
    student, maps = make_student(batch), make_maps(batch)
    full = make_criterion()(student, batch, maps).terms
    sampled = make_criterion(dense_pixels_per_image=10**6)(student, batch, maps).terms
    few = make_criterion(dense_pixels_per_image=5)(student, batch, maps).terms
    for k in range(4):  # KD reads the teacher at the projected pixels whatever the sample
        assert few[f"stage{k}_kd"].item() == pytest.approx(full[f"stage{k}_kd"].item(), rel=1e-5)
        assert sampled[f"stage{k}_2d"].item() == pytest.approx(full[f"stage{k}_2d"].item(), rel=1e-4)
    assert few["stage0_2d"].item() != pytest.approx(full["stage0_2d"].item(), rel=1e-3)
    with pytest.raises(ValueError, match="dense_pixels_per_image"):
        LossConfig(dense_pixels_per_image=0)


# ------------------------------------------------------------------------------------------ empty cases
def _assert_finite_and_connected(criterion: PPMSKD, result: LossTerms, student: StudentOutput, maps) -> None:
    assert all(torch.isfinite(v) for v in result.terms.values()), result.terms
    result.total.backward()
    for name, param in criterion.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert student.logits.grad is not None and all(m.grad is not None for m in maps)


@pytest.mark.parametrize("pseudo", [False, True])
def test_no_labelled_point(pseudo):
    batch = make_batch(seed=10, pseudo=pseudo, labelled=False)
    student, maps = make_student(batch), make_maps(batch)
    criterion = make_criterion()
    result = criterion(student, batch, maps)
    for name, value in result.terms.items():
        if not name.endswith("_kd"):  # KD needs no label
            assert value.item() == 0.0, name
    assert result.terms["stage0_kd"].item() > 0
    _assert_finite_and_connected(criterion, result, student, maps)


@pytest.mark.parametrize("pseudo", [False, True])
def test_no_projected_point(pseudo):
    batch = make_batch(seed=11, projected=(0, 0), pseudo=pseudo)
    student, maps = make_student(batch), make_maps(batch)
    criterion = make_criterion()
    result = criterion(student, batch, maps)
    for k in range(4):
        assert result.terms[f"stage{k}_kd"].item() == 0.0
        assert (result.terms[f"stage{k}_2d"].item() > 0) == pseudo  # dense labels still supervise the teacher
    assert result.terms["main_ce"].item() > 0
    _assert_finite_and_connected(criterion, result, student, maps)


def test_voxel_of_ignored_points_takes_no_part():
    batch = make_batch(seed=12)
    student, maps = make_student(batch), make_maps(batch)
    criterion = make_criterion()
    stage = student.stages[3]
    # voxel 0 of the last stage holds only ignored points: its features must not matter for the 3D loss
    batch.labels[stage.point_to_voxel == 0] = 0
    before = criterion(student, batch, maps).terms["stage3_3d"]
    grad = torch.autograd.grad(before, stage.voxel_features)[0]
    assert torch.equal(grad[0], torch.zeros(STUDENT_CHANNELS)) and grad[1:].abs().sum() > 0


# ------------------------------------------------------------------------------------------ real student + teacher
@pytest.mark.parametrize("kd", [KDMode.MSKD, KDMode.KD])
@pytest.mark.parametrize("pseudo", [False, True])
def test_with_a_tiny_student_and_teacher(kd, pseudo):
    """Every trainable parameter of student, teacher and heads gets a gradient (DDP without unused ones)."""
    crop = (16, 32)
    batch = make_batch(points_per_sample=(150, 100), projected=(60, 40), seed=13, pseudo=pseudo, crop=crop)
    generator = torch.Generator().manual_seed(13)
    batch.points = torch.cat([torch.rand(250, 3, generator=generator) * torch.tensor([20.0, 20.0, 3.0])
                              - torch.tensor([10.0, 10.0, 2.0]), torch.rand(250, 1, generator=generator)], 1)
    batch.images = torch.randn(2, 3, 64, 64, generator=generator)
    torch.manual_seed(0)
    student = Student(StudentConfig(hidden_channels=STUDENT_CHANNELS, decoder_channels=8), sparse_backend="native")
    teacher = build_teacher(TeacherConfig(img_size=64, embed_dim=32, depth=4, num_heads=2, window_size=2,
                                          global_attn_indexes=(0, 1, 2, 3)), mode="full")
    criterion = PPMSKD(LossConfig(kd=kd), torch.ones(NUM_CLASSES), student_channels=STUDENT_CHANNELS,
                       teacher_channels=teacher.out_channels, num_stages=4)
    voxels = voxelise(batch.points[:, :3], batch.batch_index, batch.batch_size)
    output = student(StudentInput(points=batch.points, voxels=voxels))
    maps = teacher(batch.images, valid_hw=batch.image_size)
    result = criterion(output, batch, maps)
    assert torch.isfinite(result.total)
    result.total.backward()
    for module in (student, teacher, criterion):
        missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing
