"""Official ELiTe / 2DPASS checkpoints for the import tests and benchmark, built from ../shared/data/official/.

- `lightning_checkpoint`: what the official code's Lightning run saves around the student: an EasyDict
  config in ``hyper_parameters`` (the YAML of ELiTe's main.py, ref §1), the 2D branch's and the fusion
  heads' tensors beside ``model_3d.*``, real SGD momentum state, a scheduler state, ModelCheckpoint's
  callback state and loop progress;
- `save_official`: torch.save with a stand-in ``easydict`` module registered only while pickling, so the
  file names ``easydict.EasyDict`` exactly as real files do, though easydict is not installed;
- `scan_logits`: the runtime `Segmenter` on the spvnas scan with the student's logits caught by a hook.
"""
from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

OFFICIAL = "official"
SCAN = "semantickitti/spvnas_000000/000000.bin"  # the scan the official logits were computed on
STUDENT_PREFIX = "model_3d."
BYTES_PER_FLOAT = 4


class EasyDict(dict):
    """Pickles as ``easydict.EasyDict`` does: a dict whose items mirror its attributes, nested dicts too."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        for key, value in (values or {}).items():
            setattr(self, key, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, dict) and not isinstance(value, EasyDict):
            value = EasyDict(value)
        super().__setattr__(name, value)
        super().__setitem__(name, value)

    __setitem__ = __setattr__  # type: ignore[assignment]


EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
EASYDICT_MODULE = types.ModuleType("easydict")
EASYDICT_MODULE.EasyDict = EasyDict  # type: ignore[attr-defined]


def official_config(hidden: int = 64, scales: tuple[int, ...] = (2, 4, 8, 16),
                    min_volume: tuple[float, ...] = (-50.0, -50.0, -4.0),
                    max_volume: tuple[float, ...] = (50.0, 50.0, 2.0),
                    spatial_shape: tuple[int, ...] = (1000, 1000, 60)) -> EasyDict:
    """The groups of ELiTe's default config (ref §1) that a checkpoint's hyper_parameters carry."""
    return EasyDict({
        "model_params": {"model_architecture": "arch_elite", "input_dims": 4, "spatial_shape": list(spatial_shape),
                         "scale_list": list(scales), "hiden_size": hidden, "num_classes": 20,
                         "backbone_2d": "vit_b", "pretrained2d": True, "pretrained3d": False},
        "dataset_params": {"dataset_type": "point_image_dataset_semkitti_sam", "ignore_label": 0,
                           "min_volume_space": list(min_volume), "max_volume_space": list(max_volume),
                           "train_data_loader": {"batch_size": 4, "rotate_aug": True}},
        "train_params": {"max_num_epochs": 64, "learning_rate": 0.24, "optimizer": "SGD", "momentum": 0.9,
                         "lr_scheduler": "CosineAnnealingWarmRestarts", "lambda_xm": 0.05},
        "gpu": [0], "seed": 0, "log_dir": "elite", "checkpoint_2d": "sam_vit_b_01ec64.pth",
    })


def lightning_checkpoint(student: Mapping[str, Tensor], config: EasyDict | None, model_2d_bytes: int = 1 << 16,
                         seed: int = 0) -> dict[str, Any]:
    """A Lightning checkpoint dict as the official code saves it, around the official student `student`.

    student: official names without prefix. model_2d_bytes: float32 bytes of ``model_2d.*`` tensors; the
    optimizer state adds as much again (SGD momentum of every parameter).
    """
    generator = torch.Generator().manual_seed(seed)
    side = 256
    model_2d = {f"model_2d.image_encoder.blocks.{i}.attn.qkv.weight":
                torch.randn(side, side, generator=generator)
                for i in range(max(1, model_2d_bytes // (side * side * BYTES_PER_FLOAT)))}
    fusion = {f"fusion.leaners.{i}.weight": torch.randn(64, 96, generator=generator) for i in range(4)}
    state = {STUDENT_PREFIX + key: value for key, value in student.items()}
    state.update(model_2d)
    state.update(fusion)
    parameters = [torch.nn.Parameter(value.clone()) for key, value in state.items() if value.is_floating_point()
                  and "running_" not in key and "criterion" not in key]
    optimizer = torch.optim.SGD(parameters, lr=0.24, momentum=0.9, nesterov=True, weight_decay=1e-4)
    for parameter in parameters:
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=10)
    checkpoint: dict[str, Any] = {
        "epoch": 63, "global_step": 299_008, "pytorch-lightning_version": "1.5.0",
        "state_dict": state,
        "callbacks": {"ModelCheckpoint{'monitor': 'val/mIoU', 'mode': 'max'}": {
            "monitor": "val/mIoU", "best_model_score": torch.tensor(0.687), "current_score": torch.tensor(0.671),
            "best_model_path": "logs/SemanticKITTI/elite/version_0/checkpoints/best.ckpt",
            "dirpath": "logs/SemanticKITTI/elite/version_0/checkpoints", "best_k_models": {}}},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 64, "completed": 63}},
                               "seen_devices": {0, 1}, "rng": b"\x00\xff"}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
    }
    if config is not None:
        checkpoint["hyper_parameters"] = config
    return checkpoint


def save_official(obj: Any, path: Path) -> Path:
    """torch.save `obj` with ``easydict`` resolvable while pickling (and only then)."""
    with _module("easydict", EASYDICT_MODULE):
        torch.save(obj, path)
    return path


@contextlib.contextmanager
def _module(name: str, module: types.ModuleType) -> Iterator[None]:
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        yield
    finally:
        if previous is None:
            del sys.modules[name]
        else:
            sys.modules[name] = previous


def read_scan(data_dir: Path) -> np.ndarray:
    """(N, 4) float32 x y z intensity of the spvnas scan."""
    return np.fromfile(data_dir / SCAN, dtype=np.float32).reshape(-1, 4)


def scan_logits(checkpoint: Path, points: np.ndarray, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """(student logits (K, 20) float32 on the kept points, class id (N,) uint8 per scan point), 1 torch thread.

    One thread: spconv's CPU scatter is racy on more (ref §12), and the reference logits come from one.
    """
    from elite_ros.cloud import scan_from_arrays
    from elite_ros.segmenter import Segmenter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu", backend=backend, warmup=False)
        caught: list[Tensor] = []
        hook = segmenter.model.register_forward_hook(lambda _m, _i, output: caught.append(output.logits.float()))
        prediction = segmenter.predict(scan_from_arrays(points[:, :3], points[:, 3]))
        hook.remove()
    finally:
        torch.set_num_threads(threads)
    return caught[0].numpy(), prediction.class_id


def agreement(logits: np.ndarray, class_id: np.ndarray, reference: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    """Agreement with the official logits: argmax share, label share on kept points, max |logit difference|."""
    official = reference.argmax(axis=1)
    return {"argmax_agreement": float((logits.argmax(axis=1) == official).mean()),
            "label_agreement": float((class_id[keep] == official).mean()),
            "max_abs_logit_difference": float(np.abs(logits - reference).max())}
