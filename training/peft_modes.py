"""The paper's four teacher tuning modes (ELiTe Table II rows b-l): Fixed, PE+LN, LoRA, AdaLoRA.

All modes work on the `SamTeacherEncoder` (training/teacher.py) *after* SAM weights are loaded; the
patch decoders stay outside the tuned model and are always trainable (ref §5).

* ``fixed``   - every encoder parameter frozen.
* ``pe_ln``   - only the patch embedding (``patch_embed.*``) and every LayerNorm are trainable
                (590,592 + 36,864 = 627,456 parameters for ViT-B).
* ``lora``    - `peft.LoraConfig`: rank 8 on ``q_proj`` and ``v_proj`` of every block, ``lora_alpha`` 1
                (loralib's default, scaling 1/8), dropout 0: the official code's ``peft: lora``
                alternative (ref §5); 294,912 parameters for ViT-B.
* ``adalora`` - `peft.AdaLoraConfig` on q/k/v/proj/lin1/lin2 of every block (72 SVD adapters for
                ViT-B, init rank 12, target average rank 8): 1,991,520 parameters (ref §5).
* ``full``    - every encoder parameter trainable (not in the paper): for a teacher without pretrained
                weights, such as the tiny ViT of the CPU configs, which must learn from scratch.

peft pitfalls on a non-transformers module (ref §5, §12), handled here:

* AdaLoRA ignores ``r``; ``init_r`` / ``target_r`` are what count.
* ``target_modules`` is a regex restricted to the blocks, so ``patch_embed.proj`` (a Conv2d) is not hit.
* `update_and_allocate(model, step)` must be called every step after ``backward()`` and before
  ``zero_grad()`` (it reads ``.grad``); peft's own recommendation is after ``optimizer.step()``.
* the orthogonal regulariser is NOT added by peft for a custom module (it only adds it when the output
  has a ``.loss``); `orthogonal_regularization_loss` computes it with peft's formula for the training loss.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import re
from enum import Enum

import torch
from peft import AdaLoraConfig, LoraConfig, PeftModel, get_peft_model
from torch import nn

# AdaLoRA hyper-parameters, ref §5 (official RankAllocator in arch_elite.get_model and its peft mapping).
ADALORA_INIT_RANK = 12  # ref §5: SVDLinear r=12
ADALORA_TARGET_RANK = 8  # ref §5: target_rank=8 (average over adapters)
ADALORA_ALPHA = 1  # ref §5: loralib default lora_alpha, scaling = 1 / (ranknum + 1e-5)
ADALORA_DROPOUT = 0.0  # ref §5
ADALORA_INIT_WARMUP_FRACTION = 6  # ref §5: init_warmup = total_step / 6
ADALORA_FINAL_WARMUP_FRACTION = 2  # ref §5: final_warmup = total_step / 2
ADALORA_MASK_INTERVAL_FRACTION = 300  # ref §5: mask_interval = total_step / 300
ADALORA_BETA1 = 0.85  # ref §5
ADALORA_BETA2 = 0.85  # ref §5
ORTH_REG_WEIGHT = 0.1  # ref §5: compute_orth_regu(model_2d, regu_weight=0.1)
#: Every Linear of every transformer block (q/k/v/proj in attention, lin1/lin2 in the MLP), ref §5.
ADALORA_TARGET_MODULES = r".*blocks\.\d+\.(attn\.(q_proj|k_proj|v_proj|proj)|mlp\.(lin1|lin2))"

LORA_RANK = 8  # ref §5: official `peft: lora` = loralib Linear r=8 on q and v only
LORA_ALPHA = 1  # loralib default lora_alpha (scaling 1/8), as in the official code
LORA_DROPOUT = 0.0
LORA_TARGET_MODULES = r".*blocks\.\d+\.attn\.(q_proj|v_proj)"  # ref §5

ADAPTER_NAME = "default"


class TuningMode(str, Enum):
    """Teacher tuning modes of the paper's ablation (ref §11)."""

    FIXED = "fixed"
    PE_LN = "pe_ln"
    LORA = "lora"
    ADALORA = "adalora"
    FULL = "full"


def adalora_config(total_step: int) -> AdaLoraConfig:
    """ELiTe's AdaLoRA configuration for a schedule of `total_step` optimiser steps (ref §5).

    tinit = total//6, tfinal = total//2 and deltaT = total//300 (at least 1, so that schedules shorter
    than 300 steps, e.g. in tests, still work). peft needs tinit < total_step - tfinal.
    """
    if total_step < 3:
        raise ValueError(f"total_step must be >= 3 for AdaLoRA's three phases, got {total_step}")
    return AdaLoraConfig(
        init_r=ADALORA_INIT_RANK,
        target_r=ADALORA_TARGET_RANK,
        lora_alpha=ADALORA_ALPHA,
        lora_dropout=ADALORA_DROPOUT,
        bias="none",
        tinit=total_step // ADALORA_INIT_WARMUP_FRACTION,
        tfinal=total_step // ADALORA_FINAL_WARMUP_FRACTION,
        deltaT=max(1, total_step // ADALORA_MASK_INTERVAL_FRACTION),
        beta1=ADALORA_BETA1,
        beta2=ADALORA_BETA2,
        orth_reg_weight=ORTH_REG_WEIGHT,
        total_step=total_step,
        target_modules=ADALORA_TARGET_MODULES,
    )


def lora_config() -> LoraConfig:
    """The LoRA alternative of the official code: r=8 on q_proj and v_proj, alpha 1, dropout 0."""
    return LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, bias="none",
                      target_modules=LORA_TARGET_MODULES)


def _is_pe_or_ln(name: str, module: nn.Module) -> bool:
    return name.startswith("patch_embed") or isinstance(module, nn.LayerNorm)


def apply_tuning_mode(encoder: nn.Module, mode: TuningMode | str, *, total_step: int | None = None) -> nn.Module:
    """Freeze / adapt a loaded teacher encoder for `mode`; returns the module to call in training.

    Fixed and PE+LN return `encoder` itself with `requires_grad` set; LoRA and AdaLoRA return a
    `peft.PeftModel` wrapping it (call it like the encoder). AdaLoRA needs `total_step` (the number of
    optimiser steps of the whole training run).
    """
    mode = TuningMode(mode)
    if mode is TuningMode.FULL:
        for param in encoder.parameters():
            param.requires_grad_(True)
        return encoder
    if mode in (TuningMode.FIXED, TuningMode.PE_LN):
        for param in encoder.parameters():
            param.requires_grad_(False)
        if mode is TuningMode.PE_LN:
            for name, module in encoder.named_modules():
                if _is_pe_or_ln(name, module):
                    for param in module.parameters(recurse=False):
                        param.requires_grad_(True)
        return encoder
    if mode is TuningMode.LORA:
        return get_peft_model(encoder, lora_config())
    if total_step is None:
        raise ValueError("AdaLoRA needs total_step (optimiser steps of the whole run)")
    return get_peft_model(encoder, adalora_config(total_step))


def trainable_parameter_count(module: nn.Module) -> int:
    """Number of parameters with requires_grad."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def is_adalora(model: nn.Module) -> bool:
    """True for a PeftModel whose active adapter is AdaLoRA."""
    return isinstance(model, PeftModel) and isinstance(model.peft_config.get(ADAPTER_NAME), AdaLoraConfig)


def update_and_allocate(model: nn.Module, global_step: int) -> None:
    """AdaLoRA's importance update and rank masking for `global_step`; no-op for the other modes.

    Call after ``loss.backward()`` and before ``optimizer.zero_grad()``: it reads the adapters' grads.
    Every adapter parameter must have a gradient (run a backward through the teacher first).
    """
    if is_adalora(model):
        missing = [n for n, p in model.named_parameters() if "lora_" in n and p.requires_grad and p.grad is None]
        if missing:
            raise RuntimeError(f"update_and_allocate needs gradients; {len(missing)} adapter parameters have none "
                               f"(e.g. {missing[0]}): call it after backward and before zero_grad")
        model.base_model.update_and_allocate(global_step)


def orthogonal_regularizer(model: nn.Module, adapter_name: str = ADAPTER_NAME) -> torch.Tensor:
    """Unweighted AdaLoRA orthogonal regulariser, peft's formula (AdaLoraModel.forward).

    mean over every ``lora_A`` (P) and ``lora_B`` (Q) of the adapter of ||P Pᵀ - I||_F resp.
    ||Qᵀ Q - I||_F. A scalar tensor on the parameters' device; 0 when the model has no such adapters.
    """
    terms = []
    for name, param in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and adapter_name in name:
            cov = param @ param.T if "lora_A" in name else param.T @ param
            eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
            terms.append(torch.linalg.matrix_norm(cov - eye, ord="fro"))
    if not terms:
        device = next(model.parameters()).device
        return torch.zeros((), device=device)
    return torch.stack(terms).mean()


def orthogonal_regularization_loss(model: nn.Module, weight: float = ORTH_REG_WEIGHT) -> torch.Tensor:
    """The term the training loss adds for the teacher: `weight` x regulariser for AdaLoRA, else 0."""
    if not is_adalora(model):
        device = next(model.parameters()).device
        return torch.zeros((), device=device)
    return weight * orthogonal_regularizer(model)


_E_NAME = re.compile(rf"(?P<module>.+)\.lora_E\.{ADAPTER_NAME}$")


def adapter_ranks(model: nn.Module) -> dict[str, int]:
    """Current rank of every AdaLoRA adapter, read from the model: the number of non-zero entries of
    its singular values ``lora_E`` (AdaLoRA masks a triplet by zeroing its E entry).

    Keys are the adapted module names without the peft prefix (e.g. ``blocks.0.attn.q_proj``). Note E is
    initialised to zero (ΔW = 0), so ranks read 0 until the first optimiser step; read them after
    `update_and_allocate`.
    """
    return {module: int(torch.count_nonzero(param.detach()).item()) for module, param in _singular_values(model)}


def _singular_values(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(adapted module name, its lora_E parameter) for every AdaLoRA adapter."""
    found = []
    for name, param in model.named_parameters():
        match = _E_NAME.match(name)
        if match:
            found.append((match["module"].removeprefix("base_model.model."), param))
    return found


def adalora_budget(model: nn.Module) -> tuple[int, int]:
    """(initial, target) total rank budget of an AdaLoRA model: init_r x adapters, target_r x adapters."""
    if not is_adalora(model):
        raise ValueError("not an AdaLoRA model")
    config = model.peft_config[ADAPTER_NAME]
    count = len(_singular_values(model))
    return config.init_r * count, config.target_r * count
