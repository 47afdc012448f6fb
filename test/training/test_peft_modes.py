"""The four teacher tuning modes through peft: parameter counts, AdaLoRA schedule, orthogonal regulariser.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from peft.tuners.adalora import SVDLinear
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from elite_ros_training.peft_modes import (
    ADALORA_INIT_RANK,
    ADALORA_TARGET_RANK,
    ORTH_REG_WEIGHT,
    TuningMode,
    adalora_budget,
    adalora_config,
    adapter_ranks,
    apply_tuning_mode,
    orthogonal_regularization_loss,
    orthogonal_regularizer,
    trainable_parameter_count,
    update_and_allocate,
)
from elite_ros_training.teacher import SamTeacherEncoder, TeacherConfig

#: Tiny SAM-style encoder: 64 px frame, 4 x 4 tokens, windows of 2, global blocks 1 and 3.
TINY = TeacherConfig(img_size=64, embed_dim=32, depth=4, num_heads=2, window_size=2, global_attn_indexes=(1, 3))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors, one thread


def vit_b(mode: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return apply_tuning_mode(SamTeacherEncoder(), mode, **kwargs)


def test_parameter_counts_on_vit_b():
    adalora = vit_b("adalora", total_step=306_112)  # ref §5: 19132 * 64 // 4
    assert trainable_parameter_count(adalora) == 1_991_520  # ref §5: 72 adapters x r=12
    assert adalora_budget(adalora) == (12 * 72, 8 * 72)
    assert trainable_parameter_count(vit_b("lora")) == 12 * 2 * (8 * 768 + 768 * 8)  # q, v; r = 8
    assert trainable_parameter_count(vit_b("pe_ln")) == (768 * 3 * 16 * 16 + 768) + 12 * 2 * 2 * 768
    fixed = vit_b("fixed")
    assert trainable_parameter_count(fixed) == 0
    assert trainable_parameter_count(vit_b("full")) == 88_883_456  # every encoder parameter
    frozen = sum(p.numel() for p in fixed.parameters())
    assert frozen == 88_883_456 and round(frozen / 1e6, 1) == 88.9  # ref §5: frozen ViT-B without neck


def test_adalora_config_matches_the_reference():
    config = adalora_config(306_112)
    assert (config.init_r, config.target_r, config.lora_alpha, config.lora_dropout) == (12, 8, 1, 0.0)
    assert (config.tinit, config.tfinal, config.deltaT) == (51_018, 153_056, 1_020)  # ref §5
    assert (config.beta1, config.beta2, config.orth_reg_weight) == (0.85, 0.85, 0.1)
    assert adalora_config(40).deltaT == 1  # total // 300 would be 0
    with pytest.raises(ValueError, match="total_step"):
        apply_tuning_mode(SamTeacherEncoder(TINY), "adalora")


def test_adalora_targets_every_block_linear_but_not_patch_embedding():
    model = vit_b("adalora", total_step=300)
    adapted = {name.removeprefix("base_model.model.") for name, m in model.named_modules() if isinstance(m, SVDLinear)}
    expected = {f"blocks.{i}.{leaf}" for i in range(12)
                for leaf in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.proj", "mlp.lin1", "mlp.lin2")}
    assert adapted == expected
    assert isinstance(model.base_model.model.patch_embed.proj, nn.Conv2d)


def test_lora_and_pe_ln_modes():
    lora = vit_b("lora")
    adapted = {n.removeprefix("base_model.model.") for n, m in lora.named_modules() if isinstance(m, LoraLinear)}
    assert adapted == {f"blocks.{i}.attn.{p}" for i in range(12) for p in ("q_proj", "v_proj")}
    layer = lora.base_model.model.blocks[0].attn.q_proj
    assert layer.r["default"] == 8 and layer.scaling["default"] == pytest.approx(1 / 8)

    pe_ln = apply_tuning_mode(SamTeacherEncoder(TINY), TuningMode.PE_LN)
    trainable = {n for n, p in pe_ln.named_parameters() if p.requires_grad}
    assert trainable == {"patch_embed.proj.weight", "patch_embed.proj.bias"} | {
        f"blocks.{i}.norm{k}.{w}" for i in range(4) for k in (1, 2) for w in ("weight", "bias")}


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 3, 32, 64), torch.randn(2, 32, 2, 4)


def test_adalora_schedule_full_rank_until_warmup_then_target_budget():
    total = 40
    torch.manual_seed(0)
    model = apply_tuning_mode(SamTeacherEncoder(TINY), "adalora", total_step=total)
    config = model.peft_config["default"]
    initial, target = adalora_budget(model)
    assert (initial, target) == (ADALORA_INIT_RANK * 24, ADALORA_TARGET_RANK * 24)
    images, goal = tiny_batch()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    history = []
    for step in range(total):
        taps = model(images)
        loss = sum(nn.functional.mse_loss(t, goal) for t in taps) + orthogonal_regularization_loss(model)
        loss.backward()
        optimizer.step()
        update_and_allocate(model, step)  # after backward, before zero_grad (reads .grad)
        optimizer.zero_grad()
        history.append(adapter_ranks(model))
    assert len(history[0]) == 24
    for step in range(config.tinit + 1):  # warm-up: every adapter keeps its full rank
        assert set(history[step].values()) == {ADALORA_INIT_RANK}, step
    totals = [sum(r.values()) for r in history]
    assert min(totals[config.tinit + 1: total - config.tfinal]) < initial  # the budget decays in between
    for step in range(total - config.tfinal, total):  # final phase: the target budget, fixed pattern
        assert totals[step] == target, (step, totals[step])
    assert history[-1] == history[total - config.tfinal]
    assert len(set(history[-1].values())) > 1  # ranks re-allocated unevenly across adapters


def test_update_and_allocate_needs_gradients():
    model = apply_tuning_mode(SamTeacherEncoder(TINY), "adalora", total_step=40)
    with pytest.raises(RuntimeError, match="after backward"):
        update_and_allocate(model, 0)
    update_and_allocate(apply_tuning_mode(SamTeacherEncoder(TINY), "fixed"), 0)  # no-op for other modes


class _LossOutput(nn.Module):
    """Wraps the encoder so its output carries `.loss`: then peft itself adds the regulariser."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = SamTeacherEncoder(TINY)

    def forward(self, images):
        return SimpleNamespace(loss=sum(t.square().mean() for t in self.encoder(images)))


def test_orthogonal_regularizer_is_peft_formula():
    torch.manual_seed(0)
    model = apply_tuning_mode(_LossOutput(), "adalora", total_step=40)
    images, _ = tiny_batch()
    with torch.no_grad():
        plain = model(images).loss  # PeftModel.forward of a custom module: no regulariser (ref §12)
        with_reg = model.base_model(images).loss  # AdaLoraModel.forward adds orth_reg_weight x R
    assert with_reg - plain == pytest.approx(ORTH_REG_WEIGHT * orthogonal_regularizer(model).item(), rel=1e-5)
    assert orthogonal_regularizer(model).item() > 0


def test_orthogonal_regularizer_enters_the_loss():
    torch.manual_seed(0)
    model = apply_tuning_mode(SamTeacherEncoder(TINY), "adalora", total_step=40)
    images, goal = tiny_batch()
    task = sum(nn.functional.mse_loss(t, goal) for t in model(images))
    task.backward(retain_graph=True)
    lora_a = [p for n, p in model.named_parameters() if "lora_A" in n]
    # E = 0 at initialisation, so the task loss gives the A/B factors no gradient ...
    assert all(p.grad is None or not p.grad.any() for p in lora_a)
    model.zero_grad()
    orth = orthogonal_regularization_loss(model)
    assert orth.item() == pytest.approx(ORTH_REG_WEIGHT * orthogonal_regularizer(model).item())
    (task + orth).backward()
    # ... while the regulariser in the training loss does
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_a)
    assert orthogonal_regularization_loss(apply_tuning_mode(SamTeacherEncoder(TINY), "lora")).item() == 0.0
