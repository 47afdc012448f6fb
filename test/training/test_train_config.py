"""training/config.py: the shipped configs load, rows differ from base as Table II says, bad keys are named."""
from __future__ import annotations

import pytest
import torch

from elite_ros.config_loader import ConfigError, dump_dataclass
from elite_ros_training.config import (
    CONFIG_DIR,
    apply_overrides,
    config_from_mapping,
    load_config,
    merge,
    named_config,
    read_config_mapping,
)
from elite_ros_training.patch_decoders import DecoderKind
from elite_ros_training.peft_modes import TuningMode
from elite_ros_training.ppmskd import KDMode, class_weights_from_counts

#: Table II (ref §11): row -> (tuning mode, token cut, decoder, KD mode, SAM-PLG pseudo labels); row a: no teacher
TABLE_II = {
    "b": ("fixed", False, "maxpool_repeat", "kd", False),
    "c": ("fixed", False, "maxpool_repeat", "mskd", False),
    "d": ("fixed", True, "maxpool_repeat", "mskd", False),
    "e": ("fixed", False, "avgpool_repeat", "mskd", False),
    "f": ("fixed", False, "neck_repeat", "mskd", False),
    "g": ("fixed", True, "upscale_interpolate", "mskd", False),
    "h": ("pe_ln", True, "maxpool_repeat", "mskd", False),
    "i": ("lora", True, "maxpool_repeat", "mskd", False),
    "j": ("adalora", True, "maxpool_repeat", "mskd", False),
    "k": ("adalora", True, "upscale_interpolate", "mskd", False),
    "l": ("adalora", True, "upscale_interpolate", "mskd", True),
}


def test_base_is_the_papers_semantickitti_run():
    config = load_config(named_config("base"))
    assert (config.trainer.max_epochs, config.data.batch_size, config.trainer.precision) == (64, 4, "32-true")
    optim = config.optim
    assert (optim.optimizer, optim.lr, optim.momentum, optim.nesterov) == ("sgd", 0.24, 0.9, True)
    assert optim.weight_decay == 1e-4
    assert (optim.schedule, optim.grad_clip_norm) == ("cosine", 1.0)
    assert optim.warmup_for(1) == 0 and optim.warmup_for(4) == 250  # ref §7: 1000 // G with G > 1
    assert config.teacher.mode is TuningMode.ADALORA and config.teacher.encoder.token_cut
    assert config.loss.kd is KDMode.MSKD and config.teacher.decoder is DecoderKind.UPSCALE_INTERPOLATE
    weights = class_weights_from_counts(config.data.class_counts)  # ref §6's weights from the counts
    expected = [2.048, 11.41, 9.581, 5.696, 5.26, 9.518, 13.731, 18.214, 1.255, 3.02, 1.408, 4.214, 1.274,
                1.676, 1.0, 3.646, 1.543, 4.729, 7.416]
    assert torch.allclose(weights[1:], torch.tensor(expected), atol=2e-3)


def test_row_a_is_the_student_alone():
    config = load_config(named_config("row_a"))
    assert config.teacher is None and config.loss.kd is KDMode.NONE


@pytest.mark.parametrize("row", sorted(TABLE_II))
def test_every_row_of_table_ii_is_a_small_override_of_base(row):
    mode, cut, decoder, kd, plg = TABLE_II[row]
    path = named_config(f"row_{row}")
    config = load_config(path)
    assert config.teacher.mode is TuningMode(mode) and config.teacher.encoder.token_cut is cut
    assert config.teacher.decoder is DecoderKind(decoder) and config.loss.kd is KDMode(kd)
    assert config.data.pipeline.use_pseudo_labels is plg
    assert config.trainer.name == f"row_{row}"
    assert len(path.read_text().splitlines()) <= 8  # an override, not a copy
    base = dump_dataclass(load_config(named_config("base")))
    ours = dump_dataclass(config)
    assert ours["optim"] == base["optim"] and ours["student"] == base["student"]


def test_every_shipped_config_loads():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"base", "row_a", "row_l"} <= set(names)
    for name in names:
        load_config(named_config(name))


def test_unknown_keys_and_wrong_types_are_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^loss: unknown key\(s\) in loss: kdd"):
        load_config(named_config("base"), ["loss.kdd=kd"])
    with pytest.raises(ConfigError, match=r"^optim\.lr: must be a number, got 'fast'"):
        load_config(named_config("base"), ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        config_from_mapping({"colour": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: base.yaml\ntrainer: {max_epoch: 3}\n")
    (tmp_path / "base.yaml").write_text((CONFIG_DIR / "base.yaml").read_text())
    with pytest.raises(ConfigError, match="max_epoch"):
        load_config(bad)


def test_overrides_are_yaml_and_base_chains_merge_key_by_key(tmp_path):
    config = load_config(named_config("row_l"), ["trainer.max_epochs=2", "data.train=[a.mcap, b]", "teacher=null",
                                                 "loss.kd=none"])
    assert config.trainer.max_epochs == 2 and config.data.train == ("a.mcap", "b") and config.teacher is None
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": None}) == {"a": {"b": 1, "c": 3}, "d": None}
    assert apply_overrides({}, ["x.y.z=1"]) == {"x": {"y": {"z": 1}}}
    with pytest.raises(ConfigError, match="key.subkey=value"):
        apply_overrides({}, ["novalue"])
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        read_config_mapping(loop)


def test_inconsistent_sections_are_refused():
    with pytest.raises(ConfigError, match="loss.kd is 'mskd' but there is no teacher"):
        load_config(named_config("base"), ["teacher=null"])
    with pytest.raises(ConfigError, match="loss.kd is 'none' but a teacher is configured"):
        load_config(named_config("base"), ["loss.kd=none"])
    with pytest.raises(ConfigError, match="differs from the student's voxel grid"):
        load_config(named_config("row_a"), ["data.pipeline.volume_max=[40.0, 50.0, 2.0]"])
    with pytest.raises(ConfigError, match="target_class_counts needs the class shares of the training frames"):
        load_config(named_config("base"), [f"data.target_class_counts=[0{', 1' * 19}]"])


def test_the_default_checkpoint_is_corrected_towards_semantickittis_class_mix():
    config = load_config(named_config("default_checkpoint"))
    assert config.data.class_counts is None  # the shares of the synthetic training frames, counted
    assert config.data.target_class_counts == load_config(named_config("base")).data.class_counts


@pytest.mark.parametrize(("precision", "supported", "accelerator", "expected"), [
    ("bf16-mixed", False, "cpu", "32-true"),   # emulated bf16: fp32 instead, with a warning
    ("16-mixed", False, "cpu", "32-true"),
    ("bf16-mixed", True, "cpu", "bf16-mixed"),  # native units: kept
    ("bf16-mixed", False, "gpu", "bf16-mixed"),  # not a CPU run
    ("32-true", False, "cpu", "32-true"),
])
def test_a_half_precision_that_a_cpu_would_emulate_trains_in_fp32(monkeypatch, caplog, precision, supported,
                                                                  accelerator, expected):
    from elite_ros_training import fit

    monkeypatch.setattr(fit, "cpu_supports_precision", lambda _: supported)
    config = load_config(named_config("cpu_synthetic_row_a"), [f"trainer.precision={precision}"])
    with caplog.at_level("WARNING"):
        result = fit.with_precision_for_this_cpu(config, accelerator)
    assert result.trainer.precision == expected
    assert ("training in fp32" in caplog.text) == (expected != precision)


def test_the_progress_bar_shows_the_runs_version(tmp_path):
    """Lightning joins the TensorBoard and CSV versions ("0_csv") and shows "_csv"; the bar shows version 0."""
    from elite_ros_training import fit

    config = load_config(named_config("cpu_synthetic_row_a"), [f"trainer.out_dir={tmp_path}"])
    trainer = fit.build_trainer(config, accelerator="cpu", progress=True)
    bar = next(callback for callback in trainer.callbacks if isinstance(callback, fit.RunProgressBar))
    assert bar.get_metrics(trainer, None)["v_num"] == 0
