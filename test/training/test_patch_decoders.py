"""Patch decoders (pool / neck + repeat, upscaling + interpolate) and pixel -> point gathering.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.common import LayerNorm2d

from elite_ros_training.patch_decoders import (
    ChannelPoolRepeat,
    DecoderKind,
    NeckRepeat,
    PatchDecoders,
    UpscaleInterpolate,
    build_patch_decoder,
    gather_pixels,
)

CROP = (320, 1024)  # ref §4: 20 x 64 tokens of 16 px


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors, one thread


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_upscaling_decoder_parameters_on_vit_b():
    decoder = UpscaleInterpolate(768)
    assert params(decoder) == 664_224  # ref §4
    assert params(PatchDecoders("upscale_interpolate", 768, 4)) == 2_656_896  # x4 stages
    norm = decoder.upscale[1]
    assert isinstance(norm, LayerNorm2d) and norm.eps == 1e-6 and norm.weight.shape == (192,)
    first, second = decoder.upscale[0], decoder.upscale[3]
    assert (first.in_channels, first.out_channels, first.kernel_size, first.stride) == (768, 192, (2, 2), (2, 2))
    assert (second.in_channels, second.out_channels) == (192, 96) and decoder.out_channels == 96


@pytest.mark.parametrize("kind, channels", [("maxpool_repeat", 8), ("avgpool_repeat", 8), ("neck_repeat", 8),
                                            ("upscale_interpolate", 4)])
def test_every_decoder_maps_tokens_to_the_crop(kind, channels):
    decoders = PatchDecoders(kind, embed_dim=32, num_stages=2, out_channels=8)
    taps = [torch.randn(2, 32, 20, 64) for _ in range(2)]
    out = decoders(taps, CROP)
    assert decoders.out_channels == channels
    assert [tuple(o.shape) for o in out] == [(2, channels, 320, 1024)] * 2
    cropped = decoders(taps, (300, 1000))  # content smaller than the token-covered area
    assert tuple(cropped[0].shape) == (2, channels, 300, 1000)
    torch.testing.assert_close(cropped[0], out[0][:, :, :300, :1000])
    with pytest.raises(ValueError, match="2 decoders"):
        decoders(taps[:1], CROP)


def test_pool_decoders_pool_groups_of_channels_and_repeat_patches():
    tokens = torch.randn(1, 768, 2, 3)
    for reduction, reduce in (("max", lambda g: g.amax(2)), ("avg", lambda g: g.mean(2))):
        decoder = ChannelPoolRepeat(768, 64, 16, reduction=reduction)  # ref §4: kernel 768 / 64 = 12
        out = decoder(tokens, (32, 48))
        expected = reduce(tokens.view(1, 64, 12, 2, 3))  # groups of 12 consecutive channels
        assert out.shape == (1, 64, 32, 48)
        for row, col in ((0, 0), (15, 15), (16, 47), (31, 20)):
            torch.testing.assert_close(out[..., row, col], expected[..., row // 16, col // 16])
    assert params(ChannelPoolRepeat(768)) == 0
    with pytest.raises(ValueError, match="multiple"):
        ChannelPoolRepeat(768, 100)
    with pytest.raises(ValueError, match="reduction"):
        ChannelPoolRepeat(768, 64, reduction="median")


def test_neck_decoder_is_sam_neck_per_stage():
    decoder = build_patch_decoder(DecoderKind.NECK_REPEAT, 768, out_channels=64)
    assert isinstance(decoder, NeckRepeat)
    assert params(decoder) == 768 * 64 + 64 * 64 * 9 + 2 * 2 * 64
    tokens = torch.randn(1, 768, 2, 2)
    out = decoder(tokens, (32, 32))
    torch.testing.assert_close(out[..., 5, 20], decoder.neck(tokens)[..., 0, 1])


def test_upscale_then_bilinear_to_the_crop():
    torch.manual_seed(0)
    decoder = UpscaleInterpolate(32)
    tokens = torch.randn(1, 32, 20, 64)
    up = decoder.upscale(tokens)
    assert up.shape == (1, 4, 80, 256)
    expected = torch.nn.functional.interpolate(up, size=CROP, mode="bilinear", align_corners=False)
    torch.testing.assert_close(decoder(tokens, CROP), expected)


def test_gather_pixels_known_values():
    b, c, h, w = 2, 3, 5, 7
    index = torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w)
    pixels = [torch.tensor([[0, 0], [4, 6], [2, 3]]), torch.tensor([[1, 5]])]
    out = gather_pixels(index, pixels)
    assert out.shape == (4, 3)
    torch.testing.assert_close(out[1], index[0, :, 4, 6])
    torch.testing.assert_close(out[2], index[0, :, 2, 3])
    torch.testing.assert_close(out[3], index[1, :, 1, 5])
    assert gather_pixels(index, [torch.zeros(0, 2, dtype=torch.long)] * 2).shape == (0, 3)
    with pytest.raises(ValueError, match=r"pixels\[1\] outside"):
        gather_pixels(index, [pixels[0], torch.tensor([[5, 0]])])
    with pytest.raises(ValueError, match="batch of 2"):
        gather_pixels(index, pixels[:1])


def test_gathering_keeps_gradients():
    features = torch.randn(1, 4, 8, 8, requires_grad=True)
    gather_pixels(features, [torch.tensor([[3, 3], [3, 3]])]).sum().backward()
    assert features.grad[0, :, 3, 3].tolist() == [2.0] * 4 and features.grad.sum() == 8
