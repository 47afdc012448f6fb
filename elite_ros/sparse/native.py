"""Native backend: submanifold convolution as gather-GEMM-scatter in plain PyTorch (CPU and GPU).

Forward, per kernel offset k with pairs (i, o): ``out[o] += in[i] @ W_k`` where ``W_k`` is (in, out);
the centre offset is a plain matrix product over all sites. The forward (:func:`fused_conv`) writes every
offset's products into one buffer (the gather per offset reads the input rows in ascending order) and
sums them per output with one ``embedding_bag`` over a precomputed grouping (:class:`FusedLayout`),
instead of K^3 - 1 serial ``index_add_`` calls; in inference its scratch buffers come from a per-thread
pool. Backward is the same loop run the other way: ``grad_in[i] += grad_out[o] @ W_k^T`` and
``grad_W_k = in[i]^T @ grad_out[o]``. A custom autograd function keeps only the input features for
backward (autograd over the loop would store every gathered (P_k, C) block) and reuses two scratch
buffers for all offsets instead of allocating per offset.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .kernel_map import KernelMap, build_kernel_map

if TYPE_CHECKING:
    from .grid import SparseGrid


def offset_weights(weight: torch.Tensor) -> torch.Tensor:
    """Canonical (out, kz, ky, kx, in) -> (K^3, in, out), the right operand of ``features @ W_k``."""
    out_channels, in_channels = weight.shape[0], weight.shape[-1]
    return weight.reshape(out_channels, -1, in_channels).permute(1, 2, 0)


def _max_pairs(kernel_map: KernelMap) -> int:
    return max((int(i.numel()) for i in kernel_map.in_index if i is not None), default=0)


def _gather_gemm_scatter(features: torch.Tensor, weights: torch.Tensor, kernel_map: KernelMap,
                         *, transpose: bool) -> torch.Tensor:
    """Sum over offsets of scatter(gather(features) @ W_k); ``transpose`` runs the map backwards.

    features (M, C_a); weights (K^3, C_a, C_b) -> (M, C_b). With ``transpose`` the pairs are read as
    (output -> input), which is what the gradient with respect to the input needs.
    """
    source_index, target_index = kernel_map.in_index, kernel_map.out_index
    if transpose:
        source_index, target_index = target_index, source_index
    result = features @ weights[kernel_map.centre]
    capacity = _max_pairs(kernel_map)
    if capacity == 0:
        return result
    gathered = features.new_empty((capacity, features.shape[1]))
    product = result.new_empty((capacity, result.shape[1]))
    for k, (source, target) in enumerate(zip(source_index, target_index)):
        if source is None or target is None or source.numel() == 0:
            continue
        count = source.numel()
        torch.index_select(features, 0, source, out=gathered[:count])
        torch.mm(gathered[:count], weights[k], out=product[:count])
        result.index_add_(0, target, product[:count])
    return result


CHUNK_SITES = 16_384  # output sites per fp32 chunk: its products stay cache-resident (measured on the scan)
CHUNK_BYTES_PER_CHANNEL = CHUNK_SITES * 4  # same bytes for other dtypes (bf16: 32,768 sites; measured 7 % faster)
#: CPU half-precision GEMMs go through oneDNN, which compiles a kernel per shape (~0.5 ms) and caches it;
#: the row counts change with every scan, so they are rounded up to a multiple of this and the kernels of
#: one scan serve the next (measured: ~170 compilations per scan, +100-180 ms, without it).
HALF_GEMM_ROW_MULTIPLE = 64


@dataclass(frozen=True)
class FusedChunk:
    """The pairs feeding output sites ``[start, end)``, laid out for one segmented sum.

    Product rows: the ``end - start`` centre rows first (row ``r`` is site ``start + r``), then per
    non-centre offset ``k`` in order, ``pieces`` = (k, first row, end row). ``gather_index`` (rows -
    centre rows,): the input site of each non-centre product row. ``bag_rows`` (rows,) lists the product
    rows grouped by output site, centre first, and ``bag_starts`` (end - start,) where each site's group
    starts: the operands of one ``embedding_bag`` sum, which replaces serial ``index_add_`` calls.
    """

    start: int
    end: int
    rows: int
    pieces: tuple[tuple[int, int, int], ...]
    gather_index: torch.Tensor
    bag_rows: torch.Tensor
    bag_starts: torch.Tensor


@dataclass(frozen=True)
class FusedLayout:
    """A kernel map cut into :class:`FusedChunk` s of at most :data:`CHUNK_SITES` output sites."""

    num_sites: int
    chunks: tuple[FusedChunk, ...]


def _group_by_output(outputs: list[torch.Tensor], num_sites: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Counting sort of product rows by output site: (bag_rows (rows,), bag_starts (num_sites,)).

    ``outputs``: per block of product rows, in row order, each row's output site in [0, num_sites); a
    site appears at most once per block, so one gather and one scatter per block advance per-site cursors
    and a site's rows keep the product-row order.
    """
    counts = torch.bincount(torch.cat(outputs), minlength=num_sites)
    bag_starts = torch.cumsum(counts, 0) - counts
    cursor = bag_starts.clone()
    positions = []
    for target in outputs:
        position = cursor.index_select(0, target)
        cursor.index_copy_(0, target, position + 1)
        positions.append(position)
    bag_rows = torch.empty(rows, dtype=torch.int64, device=bag_starts.device)
    bag_rows[torch.cat(positions)] = torch.arange(rows, dtype=torch.int64, device=bag_starts.device)
    return bag_rows, bag_starts


def fused_layout(kernel_map: KernelMap, num_sites: int, chunk_sites: int = CHUNK_SITES) -> FusedLayout:
    """The :class:`FusedLayout` of ``kernel_map`` over ``num_sites`` sites, built once and cached on the map."""
    if chunk_sites < 1:
        raise ValueError(f"chunk_sites must be >= 1, got {chunk_sites}")
    key = ("fused_layout", num_sites, chunk_sites)
    layout = kernel_map.cache.get(key)
    if layout is not None:
        return layout
    device = next((i.device for i in kernel_map.in_index if i is not None), torch.device("cpu"))
    pairs = [(k, source, target) for k, (source, target) in enumerate(zip(kernel_map.in_index, kernel_map.out_index))
             if source is not None and target is not None and source.numel() > 0]
    bounds = list(range(0, num_sites, chunk_sites)) + [num_sites]
    # out_index[k] is sorted: each chunk's pairs of offset k are one slice
    cuts = [torch.searchsorted(target, torch.tensor(bounds, dtype=target.dtype, device=device)).tolist()
            for _, _, target in pairs]
    chunks = []
    for c, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        local_sites = torch.arange(end - start, dtype=torch.int64, device=device)
        pieces, inputs, outputs = [], [], [local_sites]
        rows = end - start
        for (k, source, target), cut in zip(pairs, cuts):
            low, high = cut[c], cut[c + 1]
            if high > low:
                pieces.append((k, rows, rows + high - low))
                rows += high - low
                inputs.append(source[low:high])
                outputs.append(target[low:high] - start)
        bag_rows, bag_starts = _group_by_output(outputs, end - start, rows)
        gather_index = torch.cat(inputs) if inputs else local_sites[:0]
        chunks.append(FusedChunk(start, end, rows, tuple(pieces), gather_index, bag_rows, bag_starts))
    layout = FusedLayout(num_sites, tuple(chunks))
    kernel_map.cache[key] = layout
    return layout


_SCRATCH = threading.local()  # per thread: concurrent inference threads never share a buffer


def _scratch(name: str, rows: int, columns: int, like: torch.Tensor, keep: bool) -> torch.Tensor:
    """A (rows, columns) buffer of ``like``'s dtype and device.

    With ``keep`` (inference) it comes from a grow-only per-thread pool that outlives the call: every conv
    of every scan reuses the same memory instead of page-faulting in a fresh ~100 MB block (measured:
    a first touch costs about as much as the gather itself). Its size is the largest request so far.
    """
    if not keep:
        return like.new_empty((rows, columns))
    pool = getattr(_SCRATCH, "buffers", None)
    if pool is None:
        pool = _SCRATCH.buffers = {}
    key = (name, like.dtype, like.device, torch.is_inference_mode_enabled())  # inference tensors stay inside
    buffer = pool.get(key)
    if buffer is None or buffer.numel() < rows * columns:
        buffer = pool[key] = like.new_empty(rows * columns)
    return buffer[:rows * columns].view(rows, columns)


def fused_conv(features: torch.Tensor, weights: torch.Tensor, kernel_map: KernelMap,
               bias: torch.Tensor | None = None,
               extra: tuple[torch.Tensor, torch.Tensor] | None = None,
               keep_buffers: bool | None = None, chunk_sites: int | None = None) -> torch.Tensor:
    """Submanifold convolution per chunk of output sites: per offset a gather and a GEMM into one product
    buffer, then one segmented sum (``embedding_bag``) of the chunk's products.

    features (M, C_in); weights (K^3, C_in, C_out), the right operands of ``features @ W_k``;
    bias (C_out,) or None; ``extra`` = (features2 (M, C_2), weight2 (C_2, C_out)): a 1x1x1 term
    ``features2 @ weight2`` added at the centre (a residual shortcut). Returns (M, C_out), a new tensor.
    ``keep_buffers`` (default: when autograd is off) takes the scratch buffers from a per-thread pool kept
    for the next conv and scan; training leaves it off so they are freed at once. ``chunk_sites``: output
    sites per chunk (default: :data:`CHUNK_SITES` for 4-byte features, scaled to the same bytes otherwise).
    Not differentiable through autograd by itself: :class:`_SubmanifoldConv` wraps it for training.
    """
    num_sites = features.shape[0]
    if chunk_sites is None:
        chunk_sites = CHUNK_BYTES_PER_CHANNEL // features.element_size()
    layout = fused_layout(kernel_map, num_sites, chunk_sites)
    keep = not torch.is_grad_enabled() if keep_buffers is None else keep_buffers
    channels_out = weights.shape[2]
    # Padded GEMMs: a piece's extra rows land on the next piece's rows (computed after it) or on the slack
    # rows at the end of the product buffer, never on rows already final.
    half_on_cpu = features.device.type == "cpu" and features.dtype in (torch.bfloat16, torch.float16)
    multiple = HALF_GEMM_ROW_MULTIPLE if half_on_cpu else 1
    if len(layout.chunks) != 1:
        result = features.new_empty((num_sites, channels_out))
    for chunk in layout.chunks:
        product = _scratch("product", chunk.rows + multiple - 1, channels_out, features, keep)
        centre = product[:chunk.end - chunk.start]
        sites = features[chunk.start:chunk.end]
        if bias is None:
            torch.mm(sites, weights[kernel_map.centre], out=centre)
        else:
            torch.addmm(bias, sites, weights[kernel_map.centre], out=centre)
        if extra is not None:
            centre.addmm_(extra[0][chunk.start:chunk.end], extra[1])
        if chunk.pieces:  # per offset: gather into a small cache-resident buffer, GEMM into place
            largest = max(end - start for _, start, end in chunk.pieces)
            gathered = _scratch("gathered", largest + multiple - 1, features.shape[1], features, keep)
            first = chunk.end - chunk.start
            for k, start, end in chunk.pieces:
                rows = -(-(end - start) // multiple) * multiple
                torch.index_select(features, 0, chunk.gather_index[start - first:end - first],
                                   out=gathered[:end - start])
                torch.mm(gathered[:rows], weights[k], out=product[start:start + rows])
        summed = F.embedding_bag(chunk.bag_rows, product, chunk.bag_starts, mode="sum")
        if len(layout.chunks) == 1:
            return summed
        result[chunk.start:chunk.end] = summed
    return result


def _weight_gradient(features: torch.Tensor, grad_output: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
    """dL/dW_k = in[i]^T @ grad_out[o] per offset -> (K^3, in, out); scratch buffers reused across offsets."""
    per_offset = features.new_zeros((kernel_map.volume, features.shape[1], grad_output.shape[1]))
    torch.mm(features.t(), grad_output, out=per_offset[kernel_map.centre])
    capacity = _max_pairs(kernel_map)
    if capacity == 0:
        return per_offset
    gathered_in = features.new_empty((capacity, features.shape[1]))
    gathered_grad = grad_output.new_empty((capacity, grad_output.shape[1]))
    for k, (source, target) in enumerate(zip(kernel_map.in_index, kernel_map.out_index)):
        if source is None or target is None or source.numel() == 0:
            continue
        count = source.numel()
        torch.index_select(features, 0, source, out=gathered_in[:count])
        torch.index_select(grad_output, 0, target, out=gathered_grad[:count])
        torch.mm(gathered_in[:count].t(), gathered_grad[:count], out=per_offset[k])
    return per_offset


class _SubmanifoldConv(torch.autograd.Function):
    """Differentiable submanifold convolution over a precomputed kernel map."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap,
                keep_buffers: bool) -> torch.Tensor:
        weights = offset_weights(weight)
        ctx.kernel_map = kernel_map
        ctx.weight_shape = weight.shape
        ctx.save_for_backward(features, weight)
        return fused_conv(features, weights, kernel_map, keep_buffers=keep_buffers)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        features, weight = ctx.saved_tensors
        kernel_map: KernelMap = ctx.kernel_map
        grad_output = grad_output.contiguous()
        grad_features = grad_weight = None
        if ctx.needs_input_grad[0]:
            weights_t = offset_weights(weight).transpose(1, 2)  # (K^3, out, in)
            grad_features = _gather_gemm_scatter(grad_output, weights_t, kernel_map, transpose=True)
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_gradient(features, grad_output, kernel_map).permute(2, 0, 1).reshape(ctx.weight_shape)
        return grad_features, grad_weight, None, None


def submanifold_conv(features: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
    """(M, in) features, canonical (out, K, K, K, in) weight -> (M, out); no bias."""
    device_type = features.device.type
    keep_buffers = not torch.is_grad_enabled()  # inference: reuse pooled scratch buffers
    if torch.is_autocast_enabled(device_type):  # run at the autocast dtype, as nn.Linear would
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return _SubmanifoldConv.apply(features.to(dtype).contiguous(), weight.to(dtype), kernel_map,
                                          keep_buffers)
    if weight.dtype != features.dtype:
        weight = weight.to(features.dtype)
    return _SubmanifoldConv.apply(features.contiguous(), weight, kernel_map, keep_buffers)


class NativeBackend:
    """Kernel maps by sorted-key search, convolution by gather-GEMM-scatter; trains on CPU and GPU; fuses
    BatchNorm-folded inference convolutions (`fused_conv`)."""

    name = "native"
    fuses_inference = True

    def build_map(self, grid: SparseGrid, kernel_size: int) -> KernelMap:
        order = grid.sorted_keys()[1][1] if grid.has_sorted_keys() else None
        return build_kernel_map(grid.coords, grid.spatial_shape, kernel_size, order=order)

    def conv(self, features: torch.Tensor, weight: torch.Tensor, grid: SparseGrid, kernel_size: int) -> torch.Tensor:
        return submanifold_conv(features, weight, grid.kernel_map(kernel_size))

    def fused_conv(self, features: torch.Tensor, weight: torch.Tensor, grid: SparseGrid, kernel_size: int, *,
                   bias: torch.Tensor, extra: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        return fused_conv(features, offset_weights(weight), grid.kernel_map(kernel_size), bias=bias, extra=extra)
