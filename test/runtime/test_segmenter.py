"""Segmenter (elite_ros/segmenter.py): a label for every message point, from checkpoint to Prediction."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from elite_ros import device as device_module
from elite_ros import segmenter as segmenter_module
from elite_ros.checkpoint import make_metadata, save_checkpoint
from elite_ros.cloud import scan_from_arrays
from elite_ros.device import cpu_supports_precision, resolve_device, resolve_precision
from elite_ros.segmenter import PREDICTION_STAGES, Segmenter
from elite_ros.sparse import available_backends
from elite_ros.student import Student, StudentInput
from elite_ros.voxel import in_range_mask


@dataclass
class FakeScan:
    """Same attributes as elite_ros.cloud.Scan."""

    xyz: np.ndarray
    intensity: np.ndarray | None
    index: np.ndarray
    num_points: int


def _bin(data_dir, name: str) -> np.ndarray:
    return np.fromfile(data_dir / name, dtype=np.float32).reshape(-1, 4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded student with non-trivial BN statistics, saved as a checkpoint."""
    torch.manual_seed(0)
    model = Student()
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    path = tmp_path_factory.mktemp("ckpt") / "student.safetensors"
    return save_checkpoint(path, model, make_metadata(model, trained=False))


@pytest.fixture(scope="module")
def segmenter(checkpoint) -> Segmenter:
    return Segmenter.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def small_scan(data_dir) -> FakeScan:
    points = _bin(data_dir, "kitti_odometry/seq00/000000.bin")[::50]
    return FakeScan(xyz=points[:, :3].copy(), intensity=points[:, 3].copy(),
                    index=np.arange(points.shape[0], dtype=np.int64), num_points=points.shape[0])


def test_labels_every_message_point_with_zero_for_invalid_ones(segmenter, data_dir):
    points = _bin(data_dir, "semantickitti/spvnas_000000/000000.bin")
    assert points.shape[0] == 123_389
    rng = np.random.default_rng(0)
    far = np.column_stack([rng.uniform(60, 90, 40), rng.uniform(-5, 5, 40), np.zeros(40)]).astype(np.float32)
    nan_rows = np.full((5, 3), np.nan, dtype=np.float32)  # a duck-typed scan that kept NaN rows
    xyz = np.concatenate([points[:, :3], far, nan_rows])
    intensity = np.concatenate([points[:, 3], np.ones(45, np.float32)])
    # the message also had NaN padding that the decoder dropped: every 97th position is absent
    num_points = int(xyz.shape[0] * 97 / 96) + 2
    positions = np.setdiff1d(np.arange(num_points), np.arange(0, num_points, 97))[:xyz.shape[0]]
    scan = FakeScan(xyz=xyz, intensity=intensity, index=positions.astype(np.int64), num_points=num_points)
    prediction = segmenter.predict(scan)

    assert prediction.class_id.shape == (num_points,) and prediction.class_id.dtype == np.uint8
    assert prediction.probability.shape == (num_points,) and prediction.probability.dtype == np.float32
    valid = np.zeros(num_points, bool)
    valid[positions] = np.asarray(in_range_mask(xyz))  # NaN rows and the far points are never inside
    assert valid.sum() == np.asarray(in_range_mask(points[:, :3])).sum() == 119_549
    assert (prediction.class_id[~valid] == 0).all() and (prediction.probability[~valid] == 0).all()
    assert (prediction.probability[valid] > 1.0 / 20 - 1e-6).all() and (prediction.probability <= 1).all()
    assert prediction.class_id.max() < 20
    assert set(prediction.timings_ms) == set(PREDICTION_STAGES)
    assert prediction.timings_ms["total"] >= prediction.timings_ms["network"] > 0


def test_prediction_equals_the_loaded_network_on_the_seq00_scan(segmenter, checkpoint, data_dir):
    """Checkpoint round trip: the segmenter's labels are the argmax of the saved model's logits."""
    points = _bin(data_dir, "kitti_odometry/seq00/000000.bin")
    assert points.shape[0] == 124_668
    prediction = segmenter.predict(scan_from_arrays(points[:, :3], points[:, 3]))
    torch.manual_seed(0)
    model = Student().eval()
    from elite_ros.checkpoint import load_checkpoint
    load_checkpoint(checkpoint, model)
    keep = np.asarray(in_range_mask(points[:, :3]))
    with torch.inference_mode():
        logits = model(StudentInput.from_points(torch.from_numpy(points[keep]))).logits
    probability, label = torch.softmax(logits, 1).max(1)
    assert prediction.class_id.shape == (124_668,)
    assert np.array_equal(prediction.class_id[keep], label.numpy().astype(np.uint8))
    np.testing.assert_allclose(prediction.probability[keep], probability.numpy(), rtol=1e-5, atol=1e-6)
    assert (prediction.class_id[~keep] == 0).all() and (~keep).sum() > 0


@pytest.mark.parametrize("xyz", [np.zeros((0, 3), np.float32), np.array([[3.0, -2.0, 0.5]], np.float32),
                                 np.full((4, 3), np.nan, np.float32), np.array([[99.0, 0, 0]], np.float32)],
                         ids=["empty", "one-point", "all-nan", "out-of-range"])
def test_degenerate_clouds(segmenter, xyz):
    prediction = segmenter.predict(FakeScan(xyz=xyz, intensity=None, index=np.arange(xyz.shape[0]),
                                            num_points=xyz.shape[0] + 2))
    assert prediction.class_id.shape == (xyz.shape[0] + 2,) and prediction.probability.shape == (xyz.shape[0] + 2,)
    inside = np.isfinite(xyz).all(1) & (np.abs(xyz) < [50, 50, 2]).all(1)
    assert (prediction.probability[:xyz.shape[0]] > 0).tolist() == inside.tolist()
    assert prediction.probability[xyz.shape[0]:].tolist() == [0, 0]


def test_missing_intensity_reads_as_zero_and_scale_applies(checkpoint, small_scan):
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu", warmup=False)
    zeros = segmenter.predict(FakeScan(small_scan.xyz, np.zeros_like(small_scan.intensity), small_scan.index,
                                       small_scan.num_points))
    missing = segmenter.predict(FakeScan(small_scan.xyz, None, small_scan.index, small_scan.num_points))
    assert np.array_equal(zeros.class_id, missing.class_id)
    original = segmenter.predict(small_scan)
    autoware = Segmenter.from_checkpoint(checkpoint, device="cpu", warmup=False, intensity_scale=1 / 255)
    assert autoware.intensity_scale == pytest.approx(1 / 255) and segmenter.intensity_scale == 1.0
    as_uint8 = autoware.predict(FakeScan(small_scan.xyz, small_scan.intensity * 255, small_scan.index,
                                         small_scan.num_points))
    assert np.array_equal(as_uint8.class_id, original.class_id)
    np.testing.assert_allclose(as_uint8.probability, original.probability, rtol=1e-4, atol=1e-5)


def test_tta_is_deterministic_and_sums_votes(checkpoint, small_scan, monkeypatch):
    voting = Segmenter.from_checkpoint(checkpoint, device="cpu", tta_votes=3, warmup=False)
    first, second = voting.predict(small_scan), voting.predict(small_scan)
    assert np.array_equal(first.class_id, second.class_id)
    assert np.array_equal(first.probability, second.probability)
    single = Segmenter.from_checkpoint(checkpoint, device="cpu", warmup=False).predict(small_scan)
    assert not np.array_equal(first.probability, single.probability)  # the votes really moved the scan
    # with every vote the identity, summing 3 equal votes must give the single-vote answer
    monkeypatch.setattr(segmenter_module, "_tta_transform", lambda points, generator: points)
    identical = voting.predict(small_scan)
    assert np.array_equal(identical.class_id, single.class_id)
    np.testing.assert_allclose(identical.probability, single.probability, rtol=1e-5, atol=1e-6)


def test_tta_vote_is_a_rotation_about_z_plus_a_small_shift():
    generator = torch.Generator().manual_seed(0)
    points = torch.tensor([[10.0, 0.0, 1.0, 0.3], [0.0, -20.0, -1.0, 0.7]])
    moved = segmenter_module._tta_transform(points, generator)
    shift = moved[:, :3] - points[:, :3]
    assert torch.equal(moved[:, 3], points[:, 3])
    assert torch.allclose(shift[0, 2], shift[1, 2]) and abs(float(shift[0, 2])) < 1.0
    radius = lambda p: p[:, :2].norm(dim=1)  # noqa: E731
    assert torch.allclose(radius(moved), radius(points), atol=1.0)
    assert not torch.allclose(moved[:, :2], points[:, :2], atol=1.0)


def test_point_cap_subsamples_deterministically_and_labels_the_rest(checkpoint, small_scan):
    count = small_scan.xyz.shape[0]
    capped = Segmenter.from_checkpoint(checkpoint, device="cpu", max_points=count // 4, warmup=False)
    first, second = capped.predict(small_scan), capped.predict(small_scan)
    assert np.array_equal(first.class_id, second.class_id)
    inside = np.asarray(in_range_mask(small_scan.xyz))
    assert (first.probability[inside] > 0).all()  # every in-range point is labelled
    assert (first.probability[~inside] == 0).all()
    roomy = Segmenter.from_checkpoint(checkpoint, device="cpu", max_points=count, warmup=False)
    free = Segmenter.from_checkpoint(checkpoint, device="cpu", warmup=False)
    assert np.array_equal(roomy.predict(small_scan).class_id, free.predict(small_scan).class_id)


def test_predict_batch_equals_single_predictions(segmenter, small_scan):
    other = FakeScan(small_scan.xyz[::2] + 0.3, small_scan.intensity[::2], np.arange(0, small_scan.num_points, 2),
                     small_scan.num_points)
    batch = segmenter.predict_batch([small_scan, other])
    for scan, result in zip([small_scan, other], batch):
        alone = segmenter.predict(scan)
        assert np.array_equal(result.class_id, alone.class_id)
        np.testing.assert_allclose(result.probability, alone.probability, rtol=1e-4, atol=1e-5)
    assert segmenter.predict_batch([]) == []


def test_the_default_checkpoint_is_the_bundled_trained_one(tmp_path, monkeypatch):
    monkeypatch.setenv("ELITE_ROS_CACHE", str(tmp_path))
    default = Segmenter.from_checkpoint(None, device="auto", warmup=False)
    assert default.trained is True and default.metadata.trained is True
    assert default.class_names[1] == "car" and default.palette.shape == (20, 3)
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert default.device.type == expected_device
    assert default.backend in available_backends()


def test_bad_settings_and_scans_are_named(checkpoint, segmenter):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="tta_votes"):
        Segmenter.from_checkpoint(checkpoint, device="cpu", tta_votes=0, warmup=False)
    with pytest.raises(ValueError, match="max_points"):
        Segmenter.from_checkpoint(checkpoint, device="cpu", max_points=0, warmup=False)
    with pytest.raises(ValueError, match="intensity_scale"):
        Segmenter.from_checkpoint(checkpoint, device="cpu", intensity_scale=-1.0, warmup=False)
    with pytest.raises(ValueError, match="unknown sparse backend"):
        Segmenter.from_checkpoint(checkpoint, device="cpu", backend="cuda-magic", warmup=False)
    with pytest.raises(ValueError, match=r"scan 0: xyz must be \(N, 3\)"):
        segmenter.predict(FakeScan(np.zeros((4, 2), np.float32), None, np.arange(4), 4))
    with pytest.raises(ValueError, match="scan 0: intensity has 3 values for 4 points"):
        segmenter.predict(FakeScan(np.zeros((4, 3), np.float32), np.zeros(3), np.arange(4), 4))
    with pytest.raises(ValueError, match=r"scan 0: index values must lie in \[0, num_points=4\)"):
        segmenter.predict(FakeScan(np.zeros((4, 3), np.float32), None, np.arange(1, 5), 4))
    with pytest.raises(TypeError, match="scan 0: has no 'xyz'"):
        segmenter.predict(object())


@pytest.mark.parametrize("precision, units", [("fp16", "AVX512-FP16 or AMX-FP16"), ("bf16", "AVX512-BF16 or AMX")])
def test_half_precision_on_a_cpu_without_native_units_is_refused(checkpoint, monkeypatch, precision, units):
    monkeypatch.setattr(device_module, "cpu_supports_precision", lambda name: name == "fp32")
    with pytest.raises(ValueError, match=rf"precision '{precision}' needs a CUDA device or a CPU with native "
                                         rf"{precision} units \({units}\); this CPU has none, use fp32"):
        Segmenter.from_checkpoint(checkpoint, device="cpu", precision=precision, warmup=False)
    assert resolve_precision("fp32", torch.device("cpu")) is torch.float32


@pytest.mark.skipif(not cpu_supports_precision("bf16"), reason="this CPU has no native bf16 units (AVX512-BF16 / AMX)")
def test_bf16_on_a_cpu_with_native_units_agrees_with_fp32(checkpoint, segmenter, data_dir):
    points = _bin(data_dir, "kitti_odometry/seq00/000000.bin")
    scan = scan_from_arrays(points[:, :3], points[:, 3])
    bf16 = Segmenter.from_checkpoint(checkpoint, device="cpu", precision="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16 and bf16.backend == "native"
    full, half = segmenter.predict(scan), bf16.predict(scan)
    valid = full.probability > 0
    assert valid.sum() == np.asarray(in_range_mask(points[:, :3])).sum()
    assert np.array_equal(half.probability > 0, valid) and half.probability.dtype == np.float32
    assert (full.class_id == half.class_id)[valid].mean() > 0.98
    assert np.abs(full.probability - half.probability)[valid].mean() < 1e-3
    if "spconv" in available_backends():
        with pytest.raises(RuntimeError, match="'spconv' failed a bf16 warm-up scan on cpu: .*use backend 'native'"):
            Segmenter.from_checkpoint(checkpoint, device="cpu", precision="bf16", backend="spconv")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_gpu_agrees_with_fp32(checkpoint, data_dir, precision):
    points = _bin(data_dir, "kitti_odometry/seq00/000000.bin")
    scan = scan_from_arrays(points[:, :3], points[:, 3])
    full = Segmenter.from_checkpoint(checkpoint, device="cuda", precision="fp32").predict(scan)
    half = Segmenter.from_checkpoint(checkpoint, device="cuda", precision=precision).predict(scan)
    assert (full.class_id == half.class_id).mean() > 0.98
    cpu = Segmenter.from_checkpoint(checkpoint, device="cpu").predict(scan)
    assert (full.class_id == cpu.class_id).mean() > 0.999


def test_predict_leaves_the_torch_thread_count_alone(segmenter, small_scan):
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        segmenter.predict(small_scan)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_a_model_with_its_own_classes(tmp_path, small_scan):
    """5 classes with their own names, palette, learning map and intensity scale: all from the checkpoint."""
    import custom_classes

    five = Segmenter.from_checkpoint(custom_classes.save_checkpoint(tmp_path / "five.safetensors"), device="cpu",
                                     warmup=False)
    assert five.class_names == custom_classes.NAMES and five.classes.names == tuple(custom_classes.NAMES)
    assert five.palette.tolist() == custom_classes.PALETTE and five.palette.dtype == np.uint8
    assert five.classes.to_raw_ids(np.arange(5)).tolist() == [0, 101, 200, 300, 401]
    assert five.intensity_scale == custom_classes.INTENSITY_SCALE and five.voxel_config == five.metadata.voxel_config
    prediction = five.predict(small_scan)
    inside = np.asarray(in_range_mask(small_scan.xyz))
    assert prediction.class_id.max() < 5 and len(np.unique(prediction.class_id[inside])) > 1
    assert (prediction.probability[inside] > 1.0 / 5 - 1e-6).all()
