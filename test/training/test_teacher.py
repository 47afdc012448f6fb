"""The SAM ViT teacher encoder: q/k/v split, no neck, token cut, stage taps, SAM checkpoint loading.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import get_rel_pos
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from elite_ros_training.teacher import (
    CheckpointMismatchError,
    SamTeacherEncoder,
    SplitQKVAttention,
    TeacherConfig,
    build_teacher,
    centre_slice_rel_pos,
    load_sam_encoder_weights,
    normalize_image,
)

# A tiny encoder of SAM's classes and SAM's 1024 frame: 64 x 64 tokens, global blocks 1 and 3.
TINY = dict(embed_dim=32, depth=4, num_heads=2, global_attn_indexes=(1, 3))
CROP_H, CROP_W = 320, 1024  # ELiTe's crop (ref §4): 20 x 64 tokens


def tiny_sam_encoder() -> ImageEncoderViT:
    """SAM's own ImageEncoderViT at tiny width, random weights including non-zero rel-pos tables."""
    torch.manual_seed(0)
    sam = ImageEncoderViT(img_size=1024, patch_size=16, embed_dim=32, depth=4, num_heads=2, mlp_ratio=4,
                          out_chans=16, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                          use_rel_pos=True, window_size=14, global_attn_indexes=(1, 3))
    with torch.no_grad():
        for name, param in sam.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                param.normal_(0, 0.5)
    return sam.eval()


class SavedTensorBytes:
    """Bytes of the distinct storages autograd saves for backward (deterministic activation memory)."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())


@pytest.fixture(scope="module")
def runs():
    """The stock SAM encoder and ours (weights loaded from it) with and without the token cut, measured."""
    sam = tiny_sam_encoder()
    state = {f"image_encoder.{k}": v for k, v in sam.state_dict().items()}
    torch.manual_seed(1)
    image = torch.randn(1, 3, CROP_H, CROP_W)
    result = {"sam": sam, "image": image}
    for cut in (True, False):
        encoder = SamTeacherEncoder(TeacherConfig(**TINY, token_cut=cut))
        load_sam_encoder_weights(encoder, state)
        saved = SavedTensorBytes()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), FlopCounterMode(display=False) as flops:
            taps = encoder(image.clone().requires_grad_(True))
        result[cut] = {"encoder": encoder, "taps": taps, "saved": saved.total, "flops": flops.get_total_flops()}
    return result


def stock_taps(sam: ImageEncoderViT, image: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
    """Run SAM's own blocks and collect (B, C, H, W) outputs of the tap blocks."""
    outputs = []
    hooks = [sam.blocks[i].register_forward_hook(lambda m, i, o: outputs.append(o.permute(0, 3, 1, 2)))
             for i in taps]
    with torch.no_grad():
        sam(image)
    for hook in hooks:
        hook.remove()
    return outputs


def test_stage_shapes_with_and_without_cut(runs):
    for cut in (True, False):
        taps = runs[cut]["taps"]
        assert len(taps) == 2  # taps default to the global blocks (1, 3)
        assert [tuple(t.shape) for t in taps] == [(1, 32, 20, 64)] * 2


def test_vit_b_default_geometry_and_no_neck():
    with torch.device("meta"):
        encoder = SamTeacherEncoder()
    config = encoder.teacher_config
    assert config.taps == (2, 5, 8, 11) and config.embed_dim == 768 and config.depth == 12
    assert not hasattr(encoder, "neck") and not any(k.startswith("neck") for k in encoder.state_dict())
    attn = encoder.blocks[0].attn
    assert isinstance(attn, SplitQKVAttention) and not hasattr(attn, "qkv")
    assert attn.q_proj.weight.shape == (768, 768) and attn.q_proj.bias.shape == (768,)
    assert encoder.blocks[2].attn.rel_pos_h.shape == (127, 64)  # global block: 2*64-1 entries
    assert encoder.blocks[0].attn.rel_pos_h.shape == (27, 64)  # window 14: 2*14-1
    assert encoder.token_grid(320, 1024) == (20, 64)
    assert sum(p.numel() for p in encoder.parameters()) == 88_883_456  # ref §5: 88.9 M without neck


def test_cut_equals_sam_with_sliced_position_embedding(runs):
    """Ref §4/§12: the cut is SAM on the 320x1024 crop with the top-left 20x64 pos-embed, whose global
    blocks interpolate the 127-entry vertical rel-pos table to 39 entries (SAM's get_rel_pos)."""
    sam = runs["sam"]
    full_pos = sam.pos_embed
    sam.pos_embed = nn.Parameter(full_pos[:, :20, :64].clone())
    try:
        expected = stock_taps(sam, runs["image"], (1, 3))
    finally:
        sam.pos_embed = full_pos
    for ours, theirs in zip(runs[True]["taps"], expected):
        torch.testing.assert_close(ours.detach(), theirs, rtol=1e-4, atol=1e-4)


def test_no_cut_equals_sam_on_padded_square(runs):
    padded = torch.nn.functional.pad(runs["image"], (0, 0, 0, 1024 - CROP_H))
    expected = stock_taps(runs["sam"], padded, (1, 3))
    for ours, theirs in zip(runs[False]["taps"], expected):
        torch.testing.assert_close(ours.detach(), theirs[:, :, :20, :64], rtol=1e-4, atol=1e-4)
    # the padding tokens take part in global attention, so the two modes really differ
    assert not torch.allclose(runs[True]["taps"][1], runs[False]["taps"][1], atol=1e-3)


def test_padded_input_with_valid_hw_equals_crop(runs):
    encoder = runs[True]["encoder"]
    padded = torch.nn.functional.pad(runs["image"], (0, 0, 0, 1024 - CROP_H))
    with torch.no_grad():
        from_padded = encoder(padded, valid_hw=(CROP_H, CROP_W))
        from_crop = encoder(runs["image"])
    for a, b in zip(from_padded, from_crop):
        torch.testing.assert_close(a, b)


def test_token_cut_saves_activation_memory_and_compute(runs):
    cut, full = runs[True], runs[False]
    assert cut["saved"] < 0.4 * full["saved"], (cut["saved"], full["saved"])  # >= 60 % saved
    assert cut["flops"] < 0.4 * full["flops"], (cut["flops"], full["flops"])


def test_rel_pos_interpolation_127_to_39_and_slice_option():
    table = torch.randn(127, 8)
    interpolated = get_rel_pos(20, 20, table)  # what SAM does for 20 rows (ref §4)
    assert interpolated.shape == (20, 20, 8)
    sliced = centre_slice_rel_pos(table, 20)
    assert sliced.shape == (39, 8)
    torch.testing.assert_close(sliced, table[44:83])
    distance = torch.arange(20)[:, None] - torch.arange(20)[None]
    torch.testing.assert_close(get_rel_pos(20, 20, sliced), table[63 + distance])
    assert not torch.allclose(interpolated, get_rel_pos(20, 20, sliced))


def test_slice_mode_changes_global_blocks_only(runs):
    encoder = SamTeacherEncoder(TeacherConfig(**TINY, rel_pos_cut="slice"))
    encoder.load_state_dict(runs[True]["encoder"].state_dict())
    with torch.no_grad():
        taps = encoder(runs["image"])
    # the first tap follows global block 1, whose 127-entry vertical table is now sliced, not resized
    assert not torch.allclose(taps[0], runs[True]["taps"][0].detach(), atol=1e-4)
    with pytest.raises(ValueError, match="rel_pos_cut"):
        TeacherConfig(rel_pos_cut="nearest")


def test_bad_inputs_are_named():
    encoder = SamTeacherEncoder(TeacherConfig(img_size=64, embed_dim=16, depth=2, num_heads=2, window_size=2,
                                              global_attn_indexes=(1,)))
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\)"):
        encoder(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="must fit"):
        encoder(torch.zeros(1, 3, 32, 96))
    with pytest.raises(ValueError, match="tap_indexes"):
        TeacherConfig(tap_indexes=(12,))
    with pytest.raises(ValueError, match="divisible"):
        TeacherConfig(embed_dim=100, num_heads=12)


def test_other_sam_geometries_build():
    with torch.device("meta"):
        large = SamTeacherEncoder(TeacherConfig.vit_l())
        huge = SamTeacherEncoder(TeacherConfig.vit_h())
    assert len(large.blocks) == 24 and large.teacher_config.taps == (5, 11, 17, 23)
    assert huge.blocks[7].attn.rel_pos_h.shape == (127, 80) and huge.teacher_config.taps == (7, 15, 23, 31)


def test_normalize_image_uses_sam_statistics():
    rgb = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(normalize_image(rgb), torch.zeros(1, 3, 2, 2), atol=1e-6)
    assert torch.allclose(normalize_image(rgb + torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)),
                          torch.ones(1, 3, 2, 2), atol=1e-6)


# ---------------------------------------------------------------------- SAM ViT-B checkpoint loading
@pytest.fixture(scope="module")
def vit_b():
    """A random SAM ViT-B state dict with exactly the real checkpoint's keys and shapes, and our encoder."""
    from segment_anything import build_sam_vit_b

    torch.manual_seed(0)
    state = build_sam_vit_b(checkpoint=None).state_dict()
    return state, SamTeacherEncoder()


def test_every_vit_b_key_lands_where_it_should(vit_b, tmp_path):
    state, encoder = vit_b
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(state, path)
    report = load_sam_encoder_weights(encoder, path)  # through torch.load(weights_only=True)
    ours = encoder.state_dict()
    assert len(report.dropped_neck) == 6 and all(k.startswith("image_encoder.neck.") for k in report.dropped_neck)
    assert report.other_modules and all(not k.startswith("image_encoder.") for k in report.other_modules)
    assert set(report.loaded) == set(ours)
    for key, value in state.items():
        if not key.startswith("image_encoder.") or ".neck." in key:
            continue
        name = key.removeprefix("image_encoder.")
        if ".attn.qkv." in name:
            q, k, v = value.chunk(3, dim=0)
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
                assert torch.equal(ours[name.replace("qkv", proj)], part), (name, proj)
        else:
            assert torch.equal(ours[name], value), name
    # q, k and v really differ (the official code leaves them random: ref §10 item 1)
    assert not torch.equal(ours["blocks.0.attn.q_proj.weight"], ours["blocks.0.attn.k_proj.weight"])


def test_renamed_missing_or_reshaped_keys_fail_loudly(vit_b):
    state, encoder = vit_b
    renamed = dict(state)
    renamed["image_encoder.blocks.3.attn.q.weight"] = renamed.pop("image_encoder.blocks.3.attn.qkv.weight")
    with pytest.raises(CheckpointMismatchError) as error:
        load_sam_encoder_weights(encoder, renamed)
    message = str(error.value)
    assert "image_encoder.blocks.3.attn.q.weight" in message  # unused
    assert "blocks.3.attn.q_proj.weight" in message and "blocks.3.attn.v_proj.weight" in message  # missing

    missing = {k: v for k, v in state.items() if k != "image_encoder.pos_embed"}
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint: \['pos_embed'\]"):
        load_sam_encoder_weights(encoder, missing)

    reshaped = dict(state)
    reshaped["image_encoder.blocks.2.attn.rel_pos_h"] = torch.zeros(63, 64)
    with pytest.raises(CheckpointMismatchError, match=r"image_encoder\.blocks\.2\.attn\.rel_pos_h: shape \(63, 64\)"):
        load_sam_encoder_weights(encoder, reshaped)

    with pytest.raises(CheckpointMismatchError, match="not a SAM checkpoint"):
        load_sam_encoder_weights(encoder, {"model.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_sam_encoder_weights(encoder, "nope.pth")


# ---------------------------------------------------------------------------------- the whole teacher
def test_build_teacher_vit_b_trainable_parameters():
    from elite_ros_training.peft_modes import trainable_parameter_count

    with torch.device("meta"):
        teacher = build_teacher(total_step=306_112)
    # ref §5: AdaLoRA 1,991,520 + four upscaling decoders 2,656,896
    assert trainable_parameter_count(teacher) == 1_991_520 + 2_656_896
    assert teacher.out_channels == 96


def test_teacher_dense_maps_and_point_features(runs):
    state = {f"image_encoder.{k}": v for k, v in runs["sam"].state_dict().items()}
    teacher = build_teacher(TeacherConfig(**TINY), mode="fixed", decoder="maxpool_repeat", checkpoint=state,
                            pooled_channels=8)
    assert all(not p.requires_grad for p in teacher.encoder.parameters())
    with torch.no_grad():
        dense = teacher(runs["image"])
        pixels = [torch.tensor([[0, 0], [319, 1023], [100, 17]])]
        points = teacher(runs["image"], pixels)
    assert [tuple(m.shape) for m in dense] == [(1, 8, 320, 1024)] * 2
    assert [tuple(p.shape) for p in points] == [(3, 8)] * 2
    torch.testing.assert_close(points[1][1], dense[1][0, :, 319, 1023])
    # the loaded SAM weights drive it: the max-pooled tap equals pooling SAM's own block output
    expected = runs[True]["taps"][0].detach().view(1, 8, 4, 20, 64).amax(2)
    torch.testing.assert_close(dense[0][0, :, 100, 17], expected[0, :, 100 // 16, 17 // 16])
    assert teacher.regularization_loss().item() == 0.0


def test_teacher_adalora_step_hooks():
    config = TeacherConfig(img_size=64, embed_dim=32, depth=2, num_heads=2, window_size=2, global_attn_indexes=(1,))
    teacher = build_teacher(config, total_step=30)
    images = torch.randn(1, 3, 32, 64)
    loss = teacher(images)[0].square().mean() + teacher.regularization_loss()
    assert teacher.regularization_loss().item() > 0
    loss.backward()
    teacher.update_and_allocate(0)
    assert any(p.grad is not None for p in teacher.decoders.parameters())
