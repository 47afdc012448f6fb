"""SAM checkpoint -> teacher encoder: the key mapping (fused qkv split into q/k/v) and strict loading
("ref §N" = docs/reference.md §N).

`load_sam_encoder_weights` maps every ``image_encoder.*`` key of a SAM checkpoint (``sam_vit_b_01ec64.pth``),
chunks each ``qkv`` weight/bias into q/k/v (order q, k, v) and raises one error listing every missing or
unused key (the official code loads with ``strict=False`` and silently leaves q/k/v random: ref §10 item 1).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from elite_ros_training.teacher.encoder import SamTeacherEncoder

#: SAM's checkpoint prefix of the image encoder, and of the neck we deliberately drop.
ENCODER_PREFIX = "image_encoder."
NECK_PREFIX = "neck."


class CheckpointMismatchError(ValueError):
    """A SAM checkpoint does not map one-to-one onto the teacher encoder."""


@dataclass(frozen=True)
class LoadReport:
    """What `load_sam_encoder_weights` did with each checkpoint key."""

    loaded: tuple[str, ...]  # encoder parameter names that received a value (q/k/v_proj included)
    dropped_neck: tuple[str, ...]  # image_encoder.neck.* keys, deliberately unused (ref §4)
    other_modules: tuple[str, ...] = field(default=())  # prompt_encoder.*, mask_decoder.*: not ours


_QKV_KEY = re.compile(r"(?P<attn>blocks\.\d+\.attn)\.qkv\.(?P<kind>weight|bias)")


def _read_state_dict(checkpoint: str | Path | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        return checkpoint
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"SAM checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointMismatchError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def map_sam_encoder_keys(state: Mapping[str, torch.Tensor], prefix: str = ENCODER_PREFIX
                         ) -> tuple[dict[str, tuple[str, torch.Tensor]], list[str], list[str]]:
    """SAM checkpoint keys -> teacher parameter names.

    Returns (mapping name -> (source key, tensor), neck keys, keys outside `prefix`). Each fused
    ``blocks.i.attn.qkv.{weight,bias}`` becomes three entries ``q_proj/k_proj/v_proj`` (chunks 0/1/2
    along dim 0, SAM's q, k, v order).
    """
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    neck, other = [], []
    for key, value in state.items():
        if not key.startswith(prefix):
            other.append(key)
            continue
        name = key[len(prefix):]
        if name.startswith(NECK_PREFIX):
            neck.append(key)
            continue
        match = _QKV_KEY.fullmatch(name)
        if match:
            if value.shape[0] % 3:
                raise CheckpointMismatchError(f"{key}: fused qkv of shape {tuple(value.shape)} does not split in 3")
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                mapped[f"{match['attn']}.{proj}.{match['kind']}"] = (key, part)
            continue
        mapped[name] = (key, value)
    return mapped, neck, other


def load_sam_encoder_weights(encoder: SamTeacherEncoder, checkpoint: str | Path | Mapping[str, torch.Tensor],
                             prefix: str = ENCODER_PREFIX) -> LoadReport:
    """Load a SAM checkpoint (path to e.g. ``sam_vit_b_01ec64.pth``, or a state dict) into `encoder`.

    Every ``image_encoder.*`` key must land on a parameter and every parameter must receive a value;
    otherwise one `CheckpointMismatchError` lists all missing and unused keys. A wrong shape raises an
    error naming the key. Neck keys are dropped on purpose; keys of SAM's prompt encoder / mask decoder
    are ignored. Load before wrapping the encoder with a PEFT mode (names change after wrapping).
    """
    state = _read_state_dict(checkpoint)
    mapped, neck, other = map_sam_encoder_keys(state, prefix)
    if not mapped and not neck:
        raise CheckpointMismatchError(f"no '{prefix}*' keys in the checkpoint (keys start with "
                                      f"{sorted({k.split('.')[0] for k in state})[:5]}): not a SAM checkpoint?")
    target = encoder.state_dict()
    unused = sorted(source for name, (source, _) in mapped.items() if name not in target)
    missing = sorted(name for name in target if name not in mapped)
    if missing or unused:
        lines = []
        if missing:
            lines.append(f"{len(missing)} encoder parameter(s) missing from the checkpoint: {missing}")
        if unused:
            lines.append(f"{len(unused)} checkpoint key(s) with no encoder parameter: {unused}")
        raise CheckpointMismatchError("SAM checkpoint does not match the teacher encoder:\n  " + "\n  ".join(lines))
    for name, (source, value) in mapped.items():
        if tuple(value.shape) != tuple(target[name].shape):
            raise CheckpointMismatchError(f"{source}: shape {tuple(value.shape)} in the checkpoint, "
                                          f"{tuple(target[name].shape)} expected for {name}")
    encoder.load_state_dict({name: value for name, (_, value) in mapped.items()}, strict=True)
    return LoadReport(loaded=tuple(sorted(mapped)), dropped_neck=tuple(neck), other_modules=tuple(other))
