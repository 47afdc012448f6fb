"""Where and in which precision the network runs: device names and precisions checked against this machine.

The runtime (`Segmenter`, `SegmentationHandler`) and the training tools (`elite-ros-train plg`) resolve
devices here, so "auto" means the same everywhere.
"""
from __future__ import annotations

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda:0 when CUDA is available else cpu; "cpu"; "cuda" / "cuda:N" (checked)."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda:N', got {device!r}")
    return resolved


def cpu_supports_precision(precision: str) -> bool:
    """Whether this CPU runs `precision` natively through oneDNN (bf16: AVX512-BF16 or AMX; fp16:
    AVX512-FP16 or AMX-FP16). Without such units a half precision is emulated and slower than fp32."""
    if precision == "fp32":
        return True
    if not torch.backends.mkldnn.is_available():
        return False
    if precision == "bf16":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision == "fp16":
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """"fp32" anywhere; "fp16" / "bf16" on a CUDA device, or on a CPU with native units for it.

    On this project's 2-thread AMD EPYC (AVX512-BF16), bf16 makes the student's GEMMs ~2.4x faster.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if device.type == "cpu" and not cpu_supports_precision(precision):
        units = "AVX512-BF16 or AMX" if precision == "bf16" else "AVX512-FP16 or AMX-FP16"
        raise ValueError(f"precision {precision!r} needs a CUDA device or a CPU with native {precision} units "
                         f"({units}); this CPU has none, use fp32 (device is {device})")
    return PRECISIONS[precision]
