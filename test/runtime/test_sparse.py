"""elite_ros.sparse: every backend's submanifold conv equals a dense conv3d at the active sites."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from elite_ros.sparse import (
    BACKEND_NAMES,
    SparseGrid,
    SubMConv3d,
    available_backends,
    build_kernel_map,
    kernel_offsets,
    resolve_backend,
)

AVAILABLE = available_backends()
HAS_SPCONV = "spconv" in AVAILABLE
HAS_CUDA = torch.cuda.is_available()


def backend_param(name: str):
    no_wheel = " (no wheel: users build it from source)" if name == "torchsparse" else ""
    reason = f"{name} is not importable here{no_wheel}"
    return pytest.param(name, marks=pytest.mark.skipif(name not in AVAILABLE, reason=reason))


ALL_BACKENDS = [backend_param(name) for name in BACKEND_NAMES]


def random_grid(seed: int, batch: int = 2, shape=(5, 6, 7), density: float = 0.35) -> torch.Tensor:
    """(M, 4) int32 [batch, z, y, x] unique sites in shuffled order."""
    generator = torch.Generator().manual_seed(seed)
    occupied = torch.rand((batch, *shape), generator=generator) < density
    coords = occupied.nonzero().to(torch.int32)
    return coords[torch.randperm(len(coords), generator=generator)]


def dense_reference(features: torch.Tensor, coords: torch.Tensor, shape, batch: int, weight: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """conv3d of the densified features (padding K//2, canonical weight permuted), read at the sites."""
    c = coords.long()
    dense = features.new_zeros((batch, features.shape[1], *shape))
    dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = features
    kernel = weight.shape[1]
    out = torch.nn.functional.conv3d(dense, weight.permute(0, 4, 1, 2, 3), bias, padding=kernel // 2)
    return out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def voxelise(path: Path, voxel: float = 0.1) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """floor((p - min) / voxel) of a KITTI .bin, unique -> ((M, 4) int32 [0, z, y, x], (Z, Y, X))."""
    xyz = np.fromfile(path, dtype=np.float32).reshape(-1, 4)[:, :3]
    cells = np.unique(np.floor((xyz - xyz.min(0)) / voxel).astype(np.int64), axis=0)
    zyx = cells[:, ::-1]
    coords = np.concatenate([np.zeros((len(zyx), 1), np.int64), zyx], axis=1)
    shape = tuple(int(s) + 1 for s in zyx.max(0))
    return torch.from_numpy(coords).to(torch.int32), shape


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel_size, in_channels, out_channels, bias",
                         [(1, 3, 5, True), (3, 3, 5, False), (3, 7, 2, True), (5, 5, 3, False)])
def test_forward_equals_dense_conv3d(backend, kernel_size, in_channels, out_channels, bias):
    shape, batch = (5, 6, 7), 2
    coords = random_grid(kernel_size * 10 + in_channels, batch, shape)
    torch.manual_seed(in_channels)
    conv = SubMConv3d(in_channels, out_channels, kernel_size, bias=bias).double()
    features = torch.randn(len(coords), in_channels, dtype=torch.float64)
    grid = SparseGrid(coords, shape, batch, backend=backend)
    with torch.no_grad():
        out = conv(features, grid)
        expected = dense_reference(features, coords, shape, batch, conv.weight, conv.bias)
    assert out.shape == (len(coords), out_channels)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel_size, bias", [(1, True), (3, False), (3, True), (5, False)])
def test_native_gradients_equal_dense_conv3d(kernel_size, bias):
    shape, batch = (4, 5, 6), 2
    coords = random_grid(kernel_size, batch, shape, density=0.4)
    torch.manual_seed(kernel_size)
    conv = SubMConv3d(3, 5, kernel_size, bias=bias).double()
    features = torch.randn(len(coords), 3, dtype=torch.float64, requires_grad=True)
    out = conv(features, SparseGrid(coords, shape, batch, backend="native"))
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()

    ref_features = features.detach().clone().requires_grad_(True)
    ref_weight = conv.weight.detach().clone().requires_grad_(True)
    ref_bias = conv.bias.detach().clone().requires_grad_(True) if bias else None
    expected = dense_reference(ref_features, coords, shape, batch, ref_weight, ref_bias)
    (expected * upstream).sum().backward()
    torch.testing.assert_close(features.grad, ref_features.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(conv.weight.grad, ref_weight.grad, rtol=1e-10, atol=1e-10)
    if bias:
        torch.testing.assert_close(conv.bias.grad, ref_bias.grad, rtol=1e-10, atol=1e-10)


def test_native_gradcheck_small():
    coords = random_grid(3, batch=1, shape=(3, 3, 3), density=0.5)
    grid = SparseGrid(coords, (3, 3, 3), 1)
    features = torch.randn(len(coords), 1, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, 3, 3, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w: grid.backend.conv(f, w, grid, 3), (features, weight))


@pytest.fixture(scope="module")
def real_scan(data_dir: Path):
    coords, shape = voxelise(data_dir / "semantickitti" / "spvnas_000000" / "000000.bin")
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(len(coords), 64, generator=generator)
    return coords, shape, features


def test_backends_agree_on_real_scan(real_scan):
    coords, shape, features = real_scan
    torch.manual_seed(0)
    conv = SubMConv3d(64, 64, 3)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(2)  # spconv's CPU conv races with more than one thread: the backend must guard it
    try:
        with torch.inference_mode():
            outputs = {name: conv(features, SparseGrid(coords, shape, 1, backend=name)) for name in AVAILABLE}
    finally:
        torch.set_num_threads(previous_threads)
    reference = outputs["native"]
    assert reference.abs().mean() > 0.1
    for name, out in outputs.items():
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5, msg=f"{name} differs from native")
    # The native map on the real scan against an independent per-offset search with torch.isin.
    keys = coords.long() @ torch.tensor([0, shape[1] * shape[2], shape[2], 1])
    kernel_map = build_kernel_map(coords, shape, 3)
    offsets = kernel_offsets(3)
    for k in (4, 10, 12, 14, 16, 22, 0, 26, 5):  # the six faces, two corners, one edge
        dz, dy, dx = offsets[k]
        query = (coords.long() + torch.tensor([0, dz, dy, dx])) @ torch.tensor([0, shape[1] * shape[2], shape[2], 1])
        inside = ((coords[:, 1] + dz).clamp(0, shape[0] - 1) == coords[:, 1] + dz) & \
                 ((coords[:, 2] + dy).clamp(0, shape[1] - 1) == coords[:, 2] + dy) & \
                 ((coords[:, 3] + dx).clamp(0, shape[2] - 1) == coords[:, 3] + dx)
        expected_out = (torch.isin(query, keys) & inside).nonzero().squeeze(1)
        assert torch.equal(torch.sort(kernel_map.out_index[k]).values, expected_out)
        assert torch.equal(keys[kernel_map.in_index[k]], query[kernel_map.out_index[k]])


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_kernel_map_built_once_per_kernel_size(backend):
    coords = random_grid(7)
    grid = SparseGrid(coords, (5, 6, 7), 2, backend=backend)
    features = torch.randn(len(coords), 4)
    convs = [SubMConv3d(4, 4, 3), SubMConv3d(4, 4, 3), SubMConv3d(4, 6, 1), SubMConv3d(4, 6, 3)]
    with torch.no_grad():
        for conv in convs:
            conv(features, grid)
        assert grid.kernel_map_builds == 1 and grid.has_kernel_map(3) and not grid.has_kernel_map(1)
        SubMConv3d(4, 2, 5)(features, grid)
        SubMConv3d(4, 2, 5)(features, grid)
    assert grid.kernel_map_builds == 2
    if backend == "spconv":
        assert sorted(grid.backend_state["indice_dict"]) == ["subm3", "subm5"]


def test_kernel_map_offsets_are_cross_correlation_order():
    # B sits one voxel further along x than A: for output A, offset (0, 0, +1) reads input B.
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 2]], dtype=torch.int32)
    kernel_map = build_kernel_map(coords, (3, 3, 4), 3)
    plus_x = kernel_offsets(3).index((0, 0, 1))
    assert plus_x == 14
    assert kernel_map.out_index[plus_x].tolist() == [0] and kernel_map.in_index[plus_x].tolist() == [1]
    assert kernel_map.out_index[26 - plus_x].tolist() == [1] and kernel_map.in_index[26 - plus_x].tolist() == [0]
    assert kernel_map.num_pairs() == 2
    # x + 1 at the last column must not wrap to the next row: (0, 0, 3) and (0, 1, 0) are no neighbours.
    edge = torch.tensor([[0, 0, 0, 3], [0, 0, 1, 0]], dtype=torch.int32)
    assert build_kernel_map(edge, (1, 2, 4), 3).num_pairs() == 0


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_kernel_map_equals_brute_force_neighbour_search(kernel_size):
    # dense rows (runs of neighbours along x), faces, several samples; sites shuffled, and sorted by
    # (batch, z, y, x) as voxelise() gives them (the presorted path)
    grids = [(random_grid(seed, batch=3, shape=shape, density=0.5), shape)
             for seed, shape in [(1, (4, 3, 9)), (2, (2, 5, 3)), (3, (6, 6, 6))]]
    grids += [(torch.unique(coords, dim=0), shape) for coords, shape in grids]
    for coords, shape in grids:
        kernel_map = build_kernel_map(coords, shape, kernel_size)
        site_of = {tuple(c): row for row, c in enumerate(coords.tolist())}
        for k, (dz, dy, dx) in enumerate(kernel_offsets(kernel_size)):
            if k == kernel_map.centre:
                assert kernel_map.in_index[k] is None
                continue
            expected = [(row, site_of[(b, z + dz, y + dy, x + dx)]) for row, (b, z, y, x) in enumerate(coords.tolist())
                        if (b, z + dz, y + dy, x + dx) in site_of]
            assert list(zip(kernel_map.out_index[k].tolist(), kernel_map.in_index[k].tolist())) == expected


def test_resolve_backend_rules():
    spconv_or_native = "spconv" if HAS_SPCONV else "native"
    assert resolve_backend("auto", training=False, device="cpu") == "native"  # spconv CPU: 1 thread, slower
    assert resolve_backend("auto", training=False, device=torch.device("cuda", 0)) == spconv_or_native
    assert resolve_backend("auto", training=True, device="cpu") == "native"
    assert resolve_backend("auto", training=True, device="cuda:0") == spconv_or_native
    assert resolve_backend("native", training=True, device="cpu") == "native"
    if HAS_SPCONV:
        assert resolve_backend("spconv", training=False, device="cpu") == "spconv"
        assert resolve_backend("spconv", training=True, device="cuda") == "spconv"
        with pytest.raises(RuntimeError, match="no CPU backward"):
            resolve_backend("spconv", training=True, device="cpu")
    if "torchsparse" not in AVAILABLE:
        with pytest.raises(RuntimeError, match="'torchsparse' is not available"):
            resolve_backend("torchsparse", training=False, device="cpu")
    assert available_backends()[0] == "native"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown sparse backend 'minkowski'"):
        resolve_backend("minkowski", training=False, device="cpu")
    with pytest.raises(ValueError, match="unknown sparse backend 'minkowski'"):
        SparseGrid(random_grid(0), (5, 6, 7), 2, backend="minkowski")
    with pytest.raises(ValueError, match="must be resolved first"):
        SparseGrid(random_grid(0), (5, 6, 7), 2, backend="auto")


@pytest.mark.skipif(not HAS_SPCONV, reason="spconv is not importable here")
@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU limitation")
def test_spconv_cpu_backward_raises_clear_error():
    coords = random_grid(1)
    conv = SubMConv3d(3, 3, 3)
    out = conv(torch.randn(len(coords), 3), SparseGrid(coords, (5, 6, 7), 2, backend="spconv"))
    with pytest.raises(RuntimeError, match="no backward pass on the CPU.*backend='native'"):
        out.sum().backward()


@pytest.mark.skipif(not HAS_SPCONV, reason="spconv is not importable here")
def test_spconv_refuses_bfloat16_with_a_clear_error():
    coords = random_grid(3)
    grid = SparseGrid(coords, (5, 6, 7), 2, backend="spconv")
    conv = SubMConv3d(4, 4, 3).bfloat16()
    refusal = r"'spconv' has no torch.bfloat16 kernels .* use backend 'native'"
    with torch.no_grad(), pytest.raises(RuntimeError, match=refusal):
        conv(torch.randn(len(coords), 4).bfloat16(), grid)


def test_bad_input_errors_name_the_problem():
    coords = random_grid(2)
    with pytest.raises(ValueError, match="coords must have shape"):
        SparseGrid(coords[:, :3], (5, 6, 7), 2)
    with pytest.raises(TypeError, match="integer"):
        SparseGrid(coords.float(), (5, 6, 7), 2)
    with pytest.raises(ValueError, match=r"column 3 \(x\)"):
        SparseGrid(coords, (5, 6, 6), 2)
    with pytest.raises(ValueError, match=r"column 0 \(batch\)"):
        SparseGrid(coords, (5, 6, 7), 1)
    with pytest.raises(ValueError, match="duplicate"):
        SparseGrid(torch.cat([coords, coords[:1]]), (5, 6, 7), 2)
    grid = SparseGrid(coords, (5, 6, 7), 2)
    with pytest.raises(ValueError, match=r"features must have shape \(M, 4\)"):
        SubMConv3d(4, 4)(torch.randn(len(coords), 3), grid)
    with pytest.raises(ValueError, match="rows but the grid has"):
        SubMConv3d(4, 4)(torch.randn(len(coords) + 1, 4), grid)
    with pytest.raises(ValueError, match="odd"):
        SubMConv3d(4, 4, kernel_size=2)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_and_single_site_grids(backend):
    conv = SubMConv3d(3, 4, 3, bias=True)
    with torch.no_grad():
        empty = conv(torch.zeros(0, 3), SparseGrid(torch.zeros(0, 4, dtype=torch.int32), (4, 4, 4), 1, backend=backend))
        single_coords = torch.tensor([[0, 2, 2, 2]], dtype=torch.int32)
        features = torch.randn(1, 3)
        single = conv(features, SparseGrid(single_coords, (4, 4, 4), 1, backend=backend))
    assert empty.shape == (0, 4)
    expected = features @ conv.weight[:, 1, 1, 1, :].t() + conv.bias
    torch.testing.assert_close(single, expected)


def test_weight_layout_is_canonical():
    conv = SubMConv3d(5, 7, 3)
    assert conv.weight.shape == (7, 3, 3, 3, 5)
    if HAS_SPCONV:
        import spconv.pytorch as spconv
        assert tuple(spconv.SubMConv3d(5, 7, 3).weight.shape) == tuple(conv.weight.shape)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_forward_and_training(backend, dtype):
    shape, batch = (6, 7, 8), 2
    coords = random_grid(5, batch, shape).cuda()
    torch.manual_seed(0)
    conv = SubMConv3d(16, 32, 3).cuda()
    features = torch.randn(len(coords), 16, device="cuda")
    grid = SparseGrid(coords, shape, batch, backend=backend)
    expected = dense_reference(features.double(), coords, shape, batch, conv.weight.double(), None)
    with torch.no_grad():
        out = conv.to(dtype)(features.to(dtype), grid)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.double(), expected, rtol=tolerance, atol=tolerance)
    if dtype == torch.float32:
        inputs = features.clone().requires_grad_(True)
        conv(inputs, grid).square().sum().backward()
        ref_inputs = features.double().clone().requires_grad_(True)
        ref_weight = conv.weight.detach().double().requires_grad_(True)
        dense_reference(ref_inputs, coords, shape, batch, ref_weight, None).square().sum().backward()
        torch.testing.assert_close(inputs.grad.double(), ref_inputs.grad, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(conv.weight.grad.double(), ref_weight.grad, rtol=1e-3, atol=1e-3)


class _FakeTorchsparse:
    """A stand-in for the torchsparse 2.1 API surface our adapter touches, NOT torchsparse itself.

    torchsparse cannot be installed here, so this checks only the adapter's own logic: coordinate
    layout [batch, a1, a2, a3], kernel-map caching through ``_caches.kmaps``, and calibration of an
    offset order that differs from ours (slot j = (i3 * K + i2) * K + i1, displacement i - K//2 on
    axes a1, a2, a3, as torchsparse's get_kernel_offsets for odd kernels). Computed by brute force.
    """

    def __init__(self):
        import types

        self.kmap_builds = 0
        fake = self

        class Caches:
            def __init__(self):
                self.kmaps = {}

        class SparseTensor:
            def __init__(self, feats, coords, stride=1, spatial_range=None):
                self.feats, self.coords, self.stride, self.spatial_range = feats, coords, stride, spatial_range
                self._caches = Caches()

        def conv3d(input, weight, kernel_size, bias=None, stride=1, padding=0, dilation=1, config=None,
                   transposed=False, generative=False, training=False):
            assert stride == 1 and padding == kernel_size // 2 and bias is None
            kmap = input._caches.kmaps.get((1, kernel_size))
            if kmap is None:
                fake.kmap_builds += 1
                rows = {tuple(c): i for i, c in enumerate(input.coords.tolist())}
                r = kernel_size // 2
                kmap = []
                for i3 in range(kernel_size):
                    for i2 in range(kernel_size):
                        for i1 in range(kernel_size):
                            pairs = [(rows[(b, a1 + i1 - r, a2 + i2 - r, a3 + i3 - r)], o)
                                     for (b, a1, a2, a3), o in rows.items()
                                     if (b, a1 + i1 - r, a2 + i2 - r, a3 + i3 - r) in rows]
                            kmap.append(torch.tensor(pairs, dtype=torch.long).reshape(-1, 2))
                input._caches.kmaps[(1, kernel_size)] = kmap
            out = input.feats.new_zeros((input.feats.shape[0], weight.shape[-1]))
            for slot, pairs in enumerate(kmap):
                if len(pairs):
                    out.index_add_(0, pairs[:, 1], input.feats[pairs[:, 0]] @ weight[slot])
            result = SparseTensor(out, input.coords, spatial_range=input.spatial_range)
            result._caches = input._caches
            return result

        self.module = types.ModuleType("torchsparse")
        self.module.__version__ = "2.1.0"
        self.module.SparseTensor = SparseTensor
        self.module.nn = types.ModuleType("torchsparse.nn")
        self.module.nn.functional = types.ModuleType("torchsparse.nn.functional")
        self.module.nn.functional.conv3d = conv3d


@pytest.mark.skipif("torchsparse" in AVAILABLE, reason="the real torchsparse is tested by the backend tests")
def test_torchsparse_adapter_logic_against_a_stand_in(monkeypatch):
    from elite_ros.sparse import torchsparse_backend as adapter

    fake = _FakeTorchsparse()
    monkeypatch.setitem(sys.modules, "torchsparse", fake.module)
    monkeypatch.setitem(sys.modules, "torchsparse.nn", fake.module.nn)
    monkeypatch.setitem(sys.modules, "torchsparse.nn.functional", fake.module.nn.functional)
    for cached in (adapter._batch_last, adapter._conv3d_keywords, adapter.offset_permutation):
        cached.cache_clear()
    try:
        shape, batch = (4, 5, 6), 2
        coords = random_grid(11, batch, shape)
        grid = SparseGrid(coords, shape, batch, backend="native")
        grid.backend, grid.backend_name = adapter.TorchsparseBackend(), "torchsparse"
        permutation = adapter.offset_permutation(3, "cpu")
        assert permutation.tolist() != list(range(27))  # the stand-in's order really differs from ours
        features = torch.randn(len(coords), 3, dtype=torch.float64)
        for kernel_size in (3, 3, 5):
            conv = SubMConv3d(3, 4, kernel_size).double()
            with torch.no_grad():
                out = conv(features, grid)
            expected = dense_reference(features, coords, shape, batch, conv.weight.detach(), None)
            torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
        assert grid.kernel_map_builds == 2
        assert fake.kmap_builds - 2 == 2  # two probe grids for calibration, then one map per kernel size
    finally:
        for cached in (adapter._batch_last, adapter._conv3d_keywords, adapter.offset_permutation):
            cached.cache_clear()


@pytest.mark.parametrize("kernel_size, chunk_sites", [(1, 10_000), (3, 10_000), (3, 7), (5, 16)])
def test_native_fused_conv_with_bias_and_centre_term_equals_dense(kernel_size, chunk_sites):
    """fused_conv (one gather, GEMM per offset, one segmented sum) plus a bias and a 1x1x1 term at the
    centre, with reused scratch buffers, in one chunk of output sites or several, equals the dense conv3d
    reference."""
    from elite_ros.sparse.native import fused_conv, offset_weights
    coords = random_grid(7)
    shape, batch = (5, 6, 7), 2
    generator = torch.Generator().manual_seed(8)
    grid = SparseGrid(coords, shape, batch, backend="native")
    kernel_map = grid.kernel_map(kernel_size)
    weight = torch.randn(5, kernel_size, kernel_size, kernel_size, 4, generator=generator)
    bias = torch.randn(5, generator=generator)
    extra_weight = torch.randn(3, 5, generator=generator)
    outputs = []
    for _ in range(2):  # the second call reuses the pooled scratch buffers
        features = torch.randn(len(coords), 4, generator=generator)
        extra = torch.randn(len(coords), 3, generator=generator)
        with torch.no_grad():
            out = fused_conv(features, offset_weights(weight), kernel_map, bias=bias, extra=(extra, extra_weight),
                             chunk_sites=chunk_sites)
        expected = dense_reference(features, coords, shape, batch, weight, bias) + extra @ extra_weight
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        outputs.append((out, expected))
    for out, expected in outputs:  # results never alias the reused scratch
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                    reason="this CPU has no native bf16 units (AVX512-BF16 / AMX)")
@pytest.mark.parametrize("chunk_sites", [10_000, 7, 50])
def test_native_fused_conv_in_bf16_on_the_cpu_equals_dense(chunk_sites):
    """bf16 GEMMs run on row counts rounded up to HALF_GEMM_ROW_MULTIPLE: the padding rows never land on
    a finished product row (an overwrite would be an error of the size of the outputs)."""
    from elite_ros.sparse.native import HALF_GEMM_ROW_MULTIPLE, fused_conv, offset_weights
    shape, batch = (6, 7, 8), 2
    coords = random_grid(11, batch, shape, density=0.5)
    assert len(coords) > 4 * HALF_GEMM_ROW_MULTIPLE
    generator = torch.Generator().manual_seed(12)
    kernel_map = SparseGrid(coords, shape, batch, backend="native").kernel_map(3)
    weight = torch.randn(16, 3, 3, 3, 8, generator=generator).bfloat16()
    bias = torch.randn(16, generator=generator).bfloat16()
    features = torch.randn(len(coords), 8, generator=generator).bfloat16()
    with torch.no_grad():
        out = fused_conv(features, offset_weights(weight), kernel_map, bias=bias, chunk_sites=chunk_sites)
    assert out.dtype == torch.bfloat16
    expected = dense_reference(features.double(), coords, shape, batch, weight.double(), bias.double())
    torch.testing.assert_close(out.double(), expected, rtol=0.03, atol=0.15)
