"""Teacher encoder cost with and without the token cut (ELiTe's memory optimisation, ref §4).

SAM ViT-B geometry (random weights; pass --checkpoint for real ones), one 1024 x 320 crop (batch 1),
forward + backward of the tuned encoder (AdaLoRA by default, the paper's setting; loss = mean square of
the four stage taps). Prints one JSON object:

* ``analytic``: exact, machine-independent figures from a run on PyTorch's meta device: activation
  memory = bytes of the distinct tensors autograd saves for backward (parameters excluded), and forward
  FLOPs (torch.utils.flop_counter). Target: the cut saves >= 60 % of activation memory.
* ``cpu`` / ``cuda``: measured, each configuration in its own subprocess: forward and backward seconds,
  saved-activation bytes, and peak memory (CPU: peak RSS growth during the runs, from ru_maxrss;
  CUDA: torch.cuda.max_memory_allocated growth). CUDA is measured whenever a GPU is present.

The CPU of the development machine is shared, so CPU times are pessimistic; repeats default to 1 on
CPU. Usage: ``python benchmarks/teacher.py [--devices cpu cuda] [--repeats N] [--mode adalora]``.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from elite_ros_training.peft_modes import TuningMode, apply_tuning_mode
from elite_ros_training.sam_input import CROP_SIZE
from elite_ros_training.teacher import SamTeacherEncoder, TeacherConfig, load_sam_encoder_weights

CROP_WIDTH, CROP_HEIGHT = CROP_SIZE  # pixels
TARGET_ACTIVATION_SAVING = 0.60  # the token cut must save >= 60 % of activation memory
TOTAL_STEP = 306_112  # ref §5: AdaLoRA schedule of the default config (only shapes matter here)


class SavedActivations:
    """Sums the bytes of the distinct non-parameter tensors autograd saves for backward."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.param_storages = {self.storage_key(p) for p in model.parameters()}
        self.sizes: dict[int, int] = {}
        self.alive: list[torch.Tensor] = []  # keeps storages alive so that their keys stay unique

    @staticmethod
    def storage_key(tensor: torch.Tensor) -> int:
        """Identity of the tensor's storage (its C++ StorageImpl; works on meta tensors too)."""
        return tensor.untyped_storage()._cdata

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = self.storage_key(tensor)
        if key not in self.param_storages and key not in self.sizes:
            self.sizes[key] = tensor.untyped_storage().nbytes()
            self.alive.append(tensor)
        return tensor

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


def build(cut: bool, mode: str, device: str, checkpoint: str | None) -> torch.nn.Module:
    with torch.device(device):
        encoder = SamTeacherEncoder(TeacherConfig(token_cut=cut))
        if checkpoint:
            load_sam_encoder_weights(encoder, checkpoint)
        return apply_tuning_mode(encoder, mode, total_step=TOTAL_STEP)


def stage_loss(taps: list[torch.Tensor]) -> torch.Tensor:
    return sum(t.float().square().mean() for t in taps)


def analytic(cut: bool, mode: str) -> dict:
    """Saved activation bytes and forward FLOPs, computed on the meta device (no memory, exact)."""
    model = build(cut, mode, "meta", None)
    image = torch.empty(1, 3, CROP_HEIGHT, CROP_WIDTH, device="meta")
    saved = SavedActivations(model)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), FlopCounterMode(display=False) as flops:
        model(image)
    rows, cols = model.token_grid(CROP_HEIGHT, CROP_WIDTH) if cut else (model.teacher_config.grid_size,) * 2
    return {"tokens": rows * cols, "activation_bytes": saved.total,
            "forward_flops": int(flops.get_total_flops())}


def measure(cut: bool, mode: str, device: str, repeats: int, warmup: int, checkpoint: str | None) -> dict:
    """One configuration on a real device (run in a fresh process so peaks are its own)."""
    torch.manual_seed(0)
    model = build(cut, mode, device, checkpoint)
    image = torch.randn(1, 3, CROP_HEIGHT, CROP_WIDTH, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        sync()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    forward, backward, saved_bytes = [], [], None
    for index in range(warmup + repeats):
        model.zero_grad(set_to_none=True)
        saved = SavedActivations(model)
        sync()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            loss = stage_loss(model(image))
        sync()
        middle = time.perf_counter()
        loss.backward()
        sync()
        end = time.perf_counter()
        saved_bytes = saved.total
        del loss
        if index >= warmup:
            forward.append(round(middle - start, 4))
            backward.append(round(end - middle, 4))
    result = {"forward_s": forward, "backward_s": backward, "activation_bytes": saved_bytes}
    if device.startswith("cuda"):
        result["peak_allocated_growth_bytes"] = int(torch.cuda.max_memory_allocated() - base_cuda)
        result["gpu"] = torch.cuda.get_device_name()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["peak_rss_growth_bytes"] = int(max(0, peak - base_rss))
        result["threads"] = torch.get_num_threads()
    return result


def run_isolated(args: argparse.Namespace, cut: bool, device: str) -> dict:
    command = [sys.executable, __file__, "--single", "cut" if cut else "full", "--devices", device, "--mode", args.mode]
    if args.repeats is not None:
        command += ["--repeats", str(args.repeats)]
    if args.warmup is not None:
        command += ["--warmup", str(args.warmup)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(cut: dict, full: dict, key: str) -> float | None:
    if key in cut and key in full and full[key]:
        return round(1 - cut[key] / full[key], 4)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"],
                        help="cpu and/or cuda (cuda skipped if absent)")
    parser.add_argument("--mode", default=TuningMode.ADALORA.value, choices=[m.value for m in TuningMode])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default: 1 on CPU, 5 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 0 on CPU, 2 on CUDA)")
    parser.add_argument("--checkpoint", default=None, help="optional sam_vit_b_01ec64.pth (random weights otherwise)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default: torch's)")
    parser.add_argument("--single", choices=["cut", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.single:  # child process: one configuration, one device
        device = args.devices[0]
        repeats = args.repeats or (5 if device == "cuda" else 1)
        warmup = args.warmup if args.warmup is not None else (2 if device == "cuda" else 0)
        print(json.dumps(measure(args.single == "cut", args.mode, device, repeats, warmup, args.checkpoint)))
        return

    report = {
        "benchmark": "teacher encoder forward+backward, token cut on/off",
        "geometry": "SAM ViT-B (embed 768, depth 12, heads 12, global blocks 2,5,8,11), no neck",
        "weights": args.checkpoint or "random",
        "tuning_mode": args.mode,
        "input": [1, 3, CROP_HEIGHT, CROP_WIDTH],
        "torch": torch.__version__,
        "host": {"machine": platform.machine(), "cpu_count": os.cpu_count()},
        "note": "CPU timings on a shared development CPU are pessimistic; activation bytes are exact",
        "target_activation_saving": TARGET_ACTIVATION_SAVING,
    }
    cut, full = analytic(True, args.mode), analytic(False, args.mode)
    report["analytic"] = {"cut": cut, "full": full,
                          "activation_saving": summary(cut, full, "activation_bytes"),
                          "flops_saving": summary(cut, full, "forward_flops")}
    for device in args.devices:
        if device == "cuda" and not torch.cuda.is_available():
            report["cuda"] = "not available on this machine"
            continue
        measured = {"cut": run_isolated(args, True, device), "full": run_isolated(args, False, device)}
        peak_key = "peak_allocated_growth_bytes" if device == "cuda" else "peak_rss_growth_bytes"
        c, f = measured["cut"], measured["full"]
        if "error" not in c and "error" not in f:
            measured["activation_saving"] = summary(c, f, "activation_bytes")
            measured["peak_memory_saving"] = summary(c, f, peak_key)
            fb = lambda r: min(a + b for a, b in zip(r["forward_s"], r["backward_s"]))  # noqa: E731
            measured["forward_backward_speedup"] = round(fb(f) / fb(c), 2)
        report[device] = measured
    report["meets_target"] = bool(report["analytic"]["activation_saving"] >= TARGET_ACTIVATION_SAVING)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
