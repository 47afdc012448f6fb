"""SegmentationHandler on the real Luminar clouds (padded layout) and on edge cases."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from elite_ros.bag import TYPESTORE, iter_messages
from elite_ros.cloud import POINTCLOUD2_TYPE, decode, make_cloud, read_points
from elite_ros.handler import OUTPUTS, SegmentationHandler
from elite_ros.labels import CLASS_NAMES, packed_rgb, to_raw_ids
from elite_ros.params import ParameterError, SegmentParams
from elite_ros.voxel import in_range_mask

CLOUD_TYPE = POINTCLOUD2_TYPE


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """A tiny untrained student (8 channels): the real Segmenter code path at a fraction of the cost."""
    import torch

    from elite_ros.checkpoint import make_metadata, save_checkpoint
    from elite_ros.segmenter import Segmenter
    from elite_ros.student import Student, StudentConfig

    torch.manual_seed(0)
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8))
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model,
                           make_metadata(model, trained=False))
    return Segmenter.from_checkpoint(path, device="cpu")


@pytest.fixture(scope="module")
def luminar(luminar_bags):
    return [m.msg for m in iter_messages(luminar_bags["ros1"], msgtypes=[CLOUD_TYPE])]


def header_of(stamp_sec: int = 7, frame: str = "lidar"):
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=stamp_sec, nanosec=5), frame_id=frame)


def test_every_luminar_cloud(segmenter, luminar):
    handler = SegmentationHandler(segmenter, SegmentParams())
    assert len(luminar) == 5
    for msg in luminar:
        assert msg.point_step == 32  # 4 B padding after z, 2 B at the end
        result = handler.process(msg)
        assert result.ok, result.error
        n = msg.width * msg.height
        seg, vis, filt = (result.outputs[k] for k in OUTPUTS)
        for out in (seg, vis, filt):
            assert out.header is msg.header or out.header == msg.header
        # segmentation: every input field unchanged + class_id + probability per point
        names_in = [f.name for f in msg.fields]
        seg_names = [f.name for f in seg.fields]
        assert seg_names[: len(names_in)] == names_in
        assert sorted(seg_names[len(names_in):]) == ["class_id", "probability"]
        points_in, points_out = read_points(msg), read_points(seg)
        assert points_out.shape == (n,)
        for name in names_in:
            np.testing.assert_array_equal(points_out[name], points_in[name], err_msg=name)
        class_id, probability = points_out["class_id"], points_out["probability"]
        np.testing.assert_array_equal(class_id, result.class_id)
        assert class_id.max() < 20 and ((probability >= 0) & (probability <= 1)).all()
        # ranges up to 253 m: points outside the checkpoint's grid are unlabelled, the others predicted
        xyz = np.stack([points_in[a] for a in "xyz"], axis=1)
        inside = in_range_mask(xyz, segmenter.voxel_config)
        assert inside.sum() > 10_000 and (~inside).sum() > 10_000
        assert (class_id[~inside] == 0).all() and (probability[~inside] == 0).all()
        assert (probability[inside] > 0).all()
        # visualization: x, y, z, rgb from the palette, finite points only (all are finite here)
        assert [f.name for f in vis.fields] == ["x", "y", "z", "rgb"]
        vis_points = read_points(vis)
        assert vis_points.shape == (n,)
        np.testing.assert_array_equal(vis_points["x"], points_in["x"])
        np.testing.assert_array_equal(vis_points["rgb"].view(np.uint32), packed_rgb(class_id))
        # filtered: the input layout minus the ground classes
        keep = ~np.isin(class_id, SegmentParams().filtered_class_ids(segmenter.classes))
        assert filt.point_step == msg.point_step and [f.name for f in filt.fields] == names_in
        np.testing.assert_array_equal(read_points(filt), points_in[keep])
        assert set(result.timings_ms) == {"preprocess", "inference", "postprocess", "total"}
        assert all(v >= 0 for v in result.timings_ms.values())
    assert handler.counters.processed == 5 and handler.counters.points == sum(m.width for m in luminar)


def test_filtered_removes_the_configured_classes(segmenter, luminar):
    first = SegmentationHandler(segmenter).process(luminar[0], ["segmentation"])
    common = int(np.bincount(first.class_id[first.class_id > 0]).argmax())
    handler = SegmentationHandler(segmenter, SegmentParams(filtered_classes=(CLASS_NAMES[common], "unlabeled")))
    result = handler.process(luminar[0], ["filtered"])
    assert list(result.outputs) == ["filtered"]
    removed = np.isin(result.class_id, [0, common])
    assert removed.sum() > 0 and result.outputs["filtered"].width == int((~removed).sum())


def test_filtered_keeps_or_drops_the_unlabelled_points(segmenter, luminar):
    """Half a Luminar scan lies beyond the +-50 m grid: class 0, kept in the filtered cloud unless asked."""
    cloud = luminar[0]
    kept = SegmentationHandler(segmenter, SegmentParams(filtered_classes=())).process(cloud, ["filtered"])
    dropped = SegmentationHandler(segmenter, SegmentParams(filtered_classes=(), filtered_keep_unlabelled=False)
                                  ).process(cloud, ["filtered"])
    unlabelled = kept.class_id == 0
    assert unlabelled.mean() > 0.4  # outside the grid
    assert kept.outputs["filtered"].width == cloud.width
    assert dropped.outputs["filtered"].width == int((~unlabelled).sum())
    np.testing.assert_array_equal(read_points(dropped.outputs["filtered"]), read_points(cloud)[~unlabelled])


def test_label_format_and_probability_switch(segmenter, luminar):
    params = SegmentParams(label_format="label", publish_probability=False)
    result = SegmentationHandler(segmenter, params).process(luminar[1], ["segmentation"])
    seg = result.outputs["segmentation"]
    field = {f.name: f for f in seg.fields}["label"]
    assert field.datatype == 6 and "probability" not in {f.name for f in seg.fields}  # UINT32
    np.testing.assert_array_equal(read_points(seg)["label"], to_raw_ids(result.class_id))


def test_never_overwrites_an_input_field(segmenter):
    """A labelled KITTI-style cloud keeps its ground-truth `label`: label_format=label is refused, named."""
    xyz = np.array([[5.0, 0.0, 0.0], [6.0, 1.0, 0.0]], np.float32)
    truth = np.array([40, 10 | (3 << 16)], np.uint32)
    cloud = make_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "label": truth}, header_of())
    before = bytes(cloud.data)
    handler = SegmentationHandler(segmenter, SegmentParams(label_format="label"))
    with pytest.raises(ParameterError, match="'label_format'.*'label' field") as raised:
        handler.process(cloud)
    assert raised.value.name == "label_format" and handler.counters.failed == 1
    assert handler.counters.processed == 0 and "'label'" in handler.last_error
    assert bytes(cloud.data) == before
    # class_id output keeps the ground truth untouched next to the prediction
    result = SegmentationHandler(segmenter, SegmentParams(label_format="class_id")).process(cloud, ["segmentation"])
    assert result.ok, result.error
    np.testing.assert_array_equal(read_points(result.outputs["segmentation"])["label"], truth)
    # an already segmented cloud (class_id, probability) is refused too, naming the field
    segmented = result.outputs["segmentation"]
    with pytest.raises(ParameterError, match="'class_id' field"):
        SegmentationHandler(segmenter).process(segmented)
    with pytest.raises(ParameterError, match="'probability' field"):
        SegmentationHandler(segmenter, SegmentParams(label_format="label")).process(
            make_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                        "probability": np.ones(2, np.float32)}, header_of()))
    # outputs without the segmentation cloud do not conflict
    assert SegmentationHandler(segmenter, SegmentParams(label_format="label")).process(cloud, ["visualization"]).ok


def test_range_limits(segmenter, luminar):
    result = SegmentationHandler(segmenter, SegmentParams(min_range=10.0, max_range=30.0)).process(luminar[2], [])
    points = read_points(luminar[2])
    distance = np.linalg.norm(np.stack([points[a] for a in "xyz"], axis=1), axis=1)
    outside = (distance < 10.0) | (distance > 30.0)
    assert outside.any() and (~outside).any()
    assert (result.class_id[outside] == 0).all() and (result.probability[outside] == 0).all()
    predicted = ~outside & in_range_mask(np.stack([points[a] for a in "xyz"], axis=1), segmenter.voxel_config)
    assert predicted.sum() > 1000 and (result.probability[predicted] > 0).all()


def test_intensity_normalisation():
    xyz = np.array([[5.0, 0.0, 0.0], [6.0, 1.0, 0.0]], np.float32)
    cloud = make_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                        "intensity": np.array([255, 51], np.uint8)}, header_of())
    handler = SegmentationHandler(segmenter=None)
    np.testing.assert_allclose(handler.prepare(cloud).intensity, [1.0, 0.2])  # uint8 -> / 255
    handler = SegmentationHandler(None, SegmentParams(intensity_max=100.0))
    np.testing.assert_allclose(handler.prepare(cloud).intensity, [2.55, 0.51])
    assert SegmentationHandler(None, SegmentParams(intensity_field="none")).prepare(cloud).intensity is None
    float_cloud = make_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                              "reflectivity": np.array([0.5, 0.25], np.float32)}, header_of())
    np.testing.assert_allclose(SegmentationHandler(None).prepare(float_cloud).intensity, [0.5, 0.25])


def test_malformed_empty_and_nan_clouds(segmenter, luminar):
    handler = SegmentationHandler(segmenter)
    truncated = dataclasses.replace(luminar[0], data=luminar[0].data[:1000])
    result = handler.process(truncated)
    assert not result.ok and "malformed" in result.error and result.outputs == {}
    no_z = make_cloud({"x": np.zeros(3, np.float32), "y": np.zeros(3, np.float32)}, header_of())
    assert "'z'" in handler.process(no_z).error
    assert handler.counters.rejected == 2 and handler.last_error
    empty = make_cloud({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32), "z": np.zeros(0, np.float32)},
                       header_of(3))
    result = handler.process(empty)
    assert result.ok and all(out.width == 0 for out in result.outputs.values())
    nan = np.full(10, np.nan, np.float32)
    result = handler.process(make_cloud({"x": nan, "y": nan, "z": nan}, header_of(4)))
    assert result.ok and (result.class_id == 0).all() and result.outputs["segmentation"].width == 10
    assert result.outputs["visualization"].width == 0
    assert handler.counters.processed == 2
    with pytest.raises(ValueError, match="unknown outputs"):
        handler.process(empty, ["segmentation", "everything"])


def test_no_message_makes_process_raise(segmenter, monkeypatch):
    """Headers over the full range of their ROS types, fields that are no list, and a decoder failure nobody
    foresaw are refused, counted as rejected and reported; `process` never raises for a message."""
    handler = SegmentationHandler(segmenter)
    xyz = np.ones(3, np.float32)
    good = make_cloud({"x": xyz, "y": xyz, "z": xyz}, header_of())
    counted = dataclasses.replace(good.fields[2], count=2**31)
    messages = [dataclasses.replace(good, point_step=2**31), dataclasses.replace(good, point_step=2**32 - 1),
                dataclasses.replace(good, fields=[*good.fields[:2], counted]), dataclasses.replace(good, width=2**40),
                dataclasses.replace(good, fields=7)]
    for msg in messages:
        result = handler.process(msg)
        assert not result.ok and result.error.startswith("malformed PointCloud2: ") and "\n" not in result.error
    monkeypatch.setattr("elite_ros.handler.decode", lambda *args, **kwargs: 1 / 0)
    assert "ZeroDivisionError" in handler.process(good).error
    assert handler.counters.rejected == len(messages) + 1 and handler.counters.processed == 0
    assert handler.counters.received == len(messages) + 1


def test_precision_hint_only_for_fp32_on_a_cpu_with_native_bf16(segmenter, monkeypatch):
    from elite_ros import device as device_module

    monkeypatch.setattr(device_module, "cpu_supports_precision", lambda name: name in ("fp32", "bf16"))
    hint = SegmentationHandler(segmenter, SegmentParams()).precision_hint
    assert hint is not None and "precision bf16" in hint and "AVX512-BF16" in hint
    assert SegmentationHandler(segmenter, SegmentParams(precision="bf16")).precision_hint is None
    monkeypatch.setattr(device_module, "cpu_supports_precision", lambda name: name == "fp32")
    assert SegmentationHandler(segmenter, SegmentParams()).precision_hint is None


def test_from_params_names_the_bad_parameter(tmp_path: Path):
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="'device'"):
            SegmentationHandler.from_params(SegmentParams(device="cuda:0"))
        from elite_ros.device import cpu_supports_precision

        if not cpu_supports_precision("fp16"):
            with pytest.raises(ParameterError, match="'precision'"):
                SegmentationHandler.from_params(SegmentParams(device="cpu", precision="fp16"))
    with pytest.raises(ParameterError, match="'checkpoint'"):
        SegmentationHandler.from_params(SegmentParams(checkpoint=str(tmp_path / "missing.safetensors")))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ParameterError, match="'checkpoint'"):
        SegmentationHandler.from_params(SegmentParams(checkpoint=str(bad), device="cpu"))


def test_decode_keeps_all_points_of_luminar(luminar):
    assert len(decode(luminar[0])) == luminar[0].width  # is_dense: every point finite


def test_big_endian_float64_and_organised_layouts(segmenter):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-20, 20, (64, 3))
    handler = SegmentationHandler(segmenter)
    big = make_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2] * 0.1,
                      "intensity": rng.integers(0, 255, 64).astype(np.uint8)}, header_of(9), is_bigendian=True)
    result = handler.process(big)
    assert result.ok, result.error
    seg = result.outputs["segmentation"]
    assert seg.is_bigendian and read_points(seg)["class_id"].shape == (64,)
    np.testing.assert_array_equal(read_points(seg)["x"], xyz[:, 0])
    organised = dataclasses.replace(big, height=8, width=8, row_step=8 * big.point_step)
    result = handler.process(organised)
    assert result.ok and (result.outputs["segmentation"].height, result.outputs["segmentation"].width) == (8, 8)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_luminar_on_cuda(luminar, precision):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    handler = SegmentationHandler.from_params(SegmentParams(device="cuda:0", precision=precision))
    for msg in luminar:
        result = handler.process(msg)
        assert result.ok, result.error
        assert read_points(result.outputs["segmentation"])["class_id"].shape == (msg.width,)


@pytest.fixture(scope="module")
def tiny_scaled_checkpoint(tmp_path_factory):
    """A tiny checkpoint whose metadata says intensity_scale 0.5 (e.g. trained on another sensor's scaling)."""
    import torch

    from elite_ros.checkpoint import make_metadata, save_checkpoint
    from elite_ros.student import Student, StudentConfig

    torch.manual_seed(0)
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8))
    return save_checkpoint(tmp_path_factory.mktemp("home") / "tiny.safetensors", model,
                           make_metadata(model, trained=False, intensity_scale=0.5))


def test_checkpoint_path_with_tilde_is_expanded_for_check_and_load(tiny_scaled_checkpoint, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_scaled_checkpoint.parent))
    handler = SegmentationHandler.from_params(
        SegmentParams(checkpoint="~/tiny.safetensors", device="cpu"), warmup=False)
    assert handler.segmenter.voxel_config is not None
    with pytest.raises(ParameterError, match="'checkpoint'.*no such file"):
        SegmentationHandler.from_params(SegmentParams(checkpoint="~/missing.safetensors", device="cpu"))


def test_intensity_is_raw_over_intensity_max_times_the_checkpoints_scale(tiny_scaled_checkpoint):
    """The sensor's factor (intensity_max, a parameter) and the model's (intensity_scale, its metadata)
    compose as a product, each applied once: network intensity = raw / intensity_max x intensity_scale."""
    import torch

    handler = SegmentationHandler.from_params(
        SegmentParams(checkpoint=str(tiny_scaled_checkpoint), device="cpu", intensity_max=200.0), warmup=False)
    assert handler.segmenter.intensity_scale == 0.5  # the checkpoint's, not forced to 1
    seen: list[torch.Tensor] = []
    hook = handler.segmenter.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].points.clone()))
    xyz = np.array([[5.0, 0.0, 0.0], [6.0, 1.0, 0.0], [7.0, -1.0, 0.5], [90.0, 0.0, 0.0]], np.float32)
    raw = np.array([200, 50, 100, 7], np.uint16)
    cloud = make_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": raw}, header_of())
    try:
        assert handler.process(cloud, ["segmentation"]).ok
    finally:
        hook.remove()
    network_input = seen[0].numpy()  # the three in-grid points, in order: x, y, z, intensity
    np.testing.assert_allclose(network_input[:, :3], xyz[:3])
    np.testing.assert_allclose(network_input[:, 3], raw[:3] / 200.0 * 0.5, rtol=1e-6)


@pytest.fixture(scope="module")
def five_class_segmenter(tmp_path_factory):
    import custom_classes

    from elite_ros.segmenter import Segmenter

    path = custom_classes.save_checkpoint(tmp_path_factory.mktemp("five") / "five.safetensors")
    return Segmenter.from_checkpoint(path, device="cpu", warmup=False)


def test_a_model_with_its_own_classes_serves_every_output(five_class_segmenter, luminar):
    """Names, palette, learning-map inverse and filtered class names all come from the 5-class checkpoint."""
    import custom_classes

    msg = luminar[0]
    first = SegmentationHandler(five_class_segmenter, SegmentParams(filtered_classes=())).process(msg)
    assert first.ok, first.error
    class_id = first.class_id
    assert class_id.max() < 5 and len(np.unique(class_id[class_id > 0])) > 1
    common = int(np.bincount(class_id[class_id > 0]).argmax())
    name = custom_classes.NAMES[common]
    params = SegmentParams(filtered_classes=(name, "void"), label_format="label")
    result = SegmentationHandler(five_class_segmenter, params).process(msg)
    assert result.ok, result.error
    np.testing.assert_array_equal(result.class_id, class_id)
    # segmentation: `label` = raw id through this model's learning-map inverse (101 for ground, not 40)
    label = read_points(result.outputs["segmentation"])["label"]
    np.testing.assert_array_equal(label, custom_classes.raw_labels(class_id))
    assert set(np.unique(label)) <= {0, 101, 200, 300, 401}
    # visualization: this model's palette
    rgb = read_points(result.outputs["visualization"])["rgb"].view(np.uint32)
    np.testing.assert_array_equal(rgb, packed_rgb(class_id, np.array(custom_classes.PALETTE, np.uint8)))
    # filtered: the named class (and void) removed, by this model's names
    removed = np.isin(class_id, [0, common])
    assert removed.any() and (~removed).any()
    np.testing.assert_array_equal(read_points(result.outputs["filtered"]), read_points(msg)[~removed])


def test_filtered_classes_must_be_the_models_names(five_class_segmenter, segmenter):
    """SemanticKITTI names mean nothing to a 5-class model (and its names nothing to SemanticKITTI's)."""
    with pytest.raises(ParameterError, match=r"'filtered_classes'.*\['road'\].*void, ground, wall, plant, vehicle"):
        SegmentationHandler(five_class_segmenter, SegmentParams(filtered_classes=("road",)))
    with pytest.raises(ParameterError, match="'filtered_classes'") as raised:
        SegmentationHandler(segmenter, SegmentParams(filtered_classes=("ground", "roads")))
    assert raised.value.name == "filtered_classes" and "['ground', 'roads']" in str(raised.value)
    wall = SegmentationHandler(five_class_segmenter, SegmentParams(filtered_classes=("wall",)))
    assert wall.classes.names[2] == "wall"
