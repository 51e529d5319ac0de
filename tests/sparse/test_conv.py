"""Sparse convolutions against dense torch convolutions (the independent oracle)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcseg.sparse import SparseConv, SparseConvTranspose, SparseTensor

DENSE_CONV = {2: F.conv2d, 3: F.conv3d}
DENSE_CONV_T = {2: F.conv_transpose2d, 3: F.conv_transpose3d}


def dense_weight(weight: torch.Tensor, kernel_size: tuple[int, ...]) -> torch.Tensor:
    """(K, C_in, C_out) sparse weight → (C_out, C_in, k1..kD) dense weight (documented order)."""
    return weight.detach().permute(2, 1, 0).reshape(weight.shape[2], weight.shape[1], *kernel_size)


def random_sparse_grid(shape, channels, density, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((batch, *shape), generator=g) < density
    x = torch.randn((batch, channels, *shape), generator=g) * mask[:, None]
    return x, mask


@pytest.mark.usefixtures("conv_path")
def test_submanifold_2d_full_image_equals_conv2d():
    torch.manual_seed(0)
    img = torch.randn(2, 3, 17, 23)
    x = SparseTensor.from_dense(img)
    conv = SparseConv(3, 8, kernel_size=3, dim=2, bias=True)
    out = conv(x).dense(shape=(17, 23))
    ref = F.conv2d(img, dense_weight(conv.weight, (3, 3)), conv.bias.detach(), padding=1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 1), (3, 2), ((3, 1, 5), 1)])
@pytest.mark.usefixtures("conv_path")
def test_submanifold_3d_equals_conv3d_at_active_sites(kernel_size, dilation):
    x, mask = random_sparse_grid((9, 10, 11), 4, 0.3, batch=2)
    s = SparseTensor.from_dense(x, mask)
    conv = SparseConv(4, 6, kernel_size=kernel_size, dilation=dilation, dim=3)
    ks = conv.kernel_size
    pad = tuple(dilation * (k // 2) for k in ks)
    ref = F.conv3d(x, dense_weight(conv.weight, ks), padding=pad, dilation=dilation) * mask[:, None]
    torch.testing.assert_close(conv(s).dense(shape=(9, 10, 11)), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size,stride", [(2, 2), (3, 2), (2, 3)])
@pytest.mark.usefixtures("conv_path")
def test_strided_equals_conv3d_at_output_sites(kernel_size, stride):
    x, mask = random_sparse_grid((12, 12, 12), 3, 0.2)
    s = SparseTensor.from_dense(x, mask)
    conv = SparseConv(3, 5, kernel_size=kernel_size, stride=stride, dim=3)
    out = conv(s)
    pad = kernel_size // 2 if kernel_size % 2 else 0
    ref = F.conv3d(x, dense_weight(conv.weight, conv.kernel_size), stride=stride, padding=pad)
    # Output sites: every coarse cell holding at least one input site.
    assert out.stride == (stride,) * 3
    cells = torch.unique(torch.div(s.C[:, 1:], stride, rounding_mode="floor"), dim=0)
    got = out.dense(shape=ref.shape[2:])
    out_mask = torch.zeros(ref.shape[2:], dtype=torch.bool)
    out_mask[tuple(cells.long().t())] = True
    assert out.C.shape[0] == cells.shape[0]
    torch.testing.assert_close(got[0][:, out_mask], ref[0][:, out_mask], rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("conv_path")
def test_transposed_equals_conv_transpose3d_at_fine_sites():
    x, mask = random_sparse_grid((10, 8, 12), 4, 0.25)
    s = SparseTensor.from_dense(x, mask)
    down = SparseConv(4, 6, kernel_size=2, stride=2, dim=3)
    coarse = down(s)
    up = SparseConvTranspose(6, 3, kernel_size=2, stride=2, dim=3)
    fine = up(coarse)
    assert fine.stride == (1, 1, 1) and torch.equal(fine.C, s.C)
    dense_coarse = coarse.dense(shape=(5, 4, 6))
    # conv_transpose weight layout is (C_in, C_out, k...): out[2o + d] += in[o] * W[:, :, d]
    w = up.weight.detach().permute(1, 2, 0).reshape(6, 3, 2, 2, 2)
    ref = F.conv_transpose3d(dense_coarse, w, stride=2) * mask[:, None]
    torch.testing.assert_close(fine.dense(shape=(10, 8, 12)), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["submanifold", "strided", "transposed"])
@pytest.mark.usefixtures("conv_path")
def test_gradients_equal_dense_autograd(kind):
    shape = (8, 10, 6)
    x, mask = random_sparse_grid(shape, 3, 0.35, seed=3)
    s = SparseTensor.from_dense(x, mask)
    feats = s.F.clone().requires_grad_(True)
    s = SparseTensor(feats, s.C)
    x_dense = x.clone().requires_grad_(True)
    if kind == "transposed":
        # input: a strided conv's output (frozen), then the transposed conv under test
        pre = SparseConv(3, 3, 2, stride=2)
        pre.weight.requires_grad_(False)
        conv = SparseConvTranspose(3, 4, 2, stride=2)
        out = conv(pre(s))
        w_dense = conv.weight.detach().permute(1, 2, 0).reshape(3, 4, 2, 2, 2).requires_grad_(True)
        coarse = F.conv3d(x_dense, dense_weight(pre.weight, (2, 2, 2)), stride=2)
        ref = F.conv_transpose3d(coarse, w_dense, stride=2) * mask[:, None]
    else:
        stride, ks = (1, 3) if kind == "submanifold" else (2, 2)
        conv = SparseConv(3, 4, ks, stride=stride)
        out = conv(s)
        w_dense = dense_weight(conv.weight, (ks,) * 3).requires_grad_(True)
        ref = F.conv3d(x_dense, w_dense, stride=stride, padding=ks // 2 if ks % 2 else 0)
    out_mask = torch.zeros((1, *ref.shape[2:]), dtype=torch.bool)
    out_mask[(out.C[:, 0].long(),) + tuple((out.C[:, 1:] // out.stride[0]).long().t())] = True
    upstream = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)) * out_mask[:, None]
    (out.dense(shape=ref.shape[2:]) * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(feats.grad, x_dense.grad.movedim(1, -1)[mask], rtol=1e-4, atol=1e-5)
    if kind == "transposed":
        got = conv.weight.grad.permute(1, 2, 0).reshape(w_dense.shape)
    else:
        got = conv.weight.grad.permute(2, 1, 0).reshape(w_dense.shape)
    torch.testing.assert_close(got, w_dense.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("conv_path")
def test_wide_channels_and_many_sites_equal_dense_autograd():
    """Channel counts past the compiled kernel's 6 x 16 register tile (plus a tail) and more sites than
    its 64-row output blocks and 64-row weight-gradient steps; forward and both gradients."""
    shape = (14, 14, 14)
    x, mask = random_sparse_grid(shape, 21, 0.3, seed=7)          # ~820 sites
    s = SparseTensor.from_dense(x, mask)
    feats = s.F.clone().requires_grad_(True)
    conv = SparseConv(21, 40, 3)                                  # 40 = 2 x 16 + a tail of 8
    out = conv(SparseTensor(feats, s.C))
    x_dense = x.clone().requires_grad_(True)
    w_dense = dense_weight(conv.weight, (3, 3, 3)).requires_grad_(True)
    ref = F.conv3d(x_dense, w_dense, padding=1) * mask[:, None]
    torch.testing.assert_close(out.dense(shape=shape), ref.detach(), rtol=1e-5, atol=1e-5)
    upstream = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2)) * mask[:, None]
    (out.dense(shape=shape) * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(feats.grad, x_dense.grad.movedim(1, -1)[mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad.permute(2, 1, 0).reshape(w_dense.shape), w_dense.grad,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("cpu_kernels")
def test_compiled_kernels_give_the_same_bits_at_1_and_2_threads():
    x, mask = random_sparse_grid((20, 20, 20), 32, 0.3, seed=12)   # ~2,400 sites: tasks on both threads
    conv = SparseConv(32, 32, 3)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            s = SparseTensor.from_dense(x, mask)
            f = s.F.clone().requires_grad_(True)
            y = conv(SparseTensor(f, s.C))
            y.F.square().sum().backward()
            outs.append((y.F.detach().clone(), f.grad.clone(), conv.weight.grad.clone()))
            conv.weight.grad = None
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def brute_force_conv(coords: np.ndarray, feats: np.ndarray, weight: np.ndarray, kernel_size: int) -> np.ndarray:
    """Submanifold conv by a dictionary of sites, any D (the oracle for D=4, where torch has no conv4d)."""
    table = {tuple(c): i for i, c in enumerate(coords.tolist())}
    dim = coords.shape[1] - 1
    r = kernel_size // 2
    offsets = list(itertools.product(range(-r, r + 1), repeat=dim))
    out = np.zeros((coords.shape[0], weight.shape[2]))
    for i, c in enumerate(coords.tolist()):
        for k, o in enumerate(offsets):
            j = table.get((c[0], *[a + b for a, b in zip(c[1:], o)]))
            if j is not None:
                out[i] += feats[j] @ weight[k]
    return out


def test_submanifold_4d_equals_brute_force():
    g = torch.Generator().manual_seed(5)
    coords = torch.unique(torch.randint(0, 5, (300, 5), generator=g), dim=0)
    coords[:, 0] = coords[:, 0] % 2
    coords = torch.unique(coords, dim=0).int()
    feats = torch.randn(coords.shape[0], 3, generator=g, dtype=torch.float64)
    conv = SparseConv(3, 2, kernel_size=3, dim=4).double()
    out = conv(SparseTensor(feats, coords))
    ref = brute_force_conv(coords.numpy(), feats.numpy(), conv.weight.detach().numpy(), 3)
    np.testing.assert_allclose(out.F.detach().numpy(), ref, rtol=1e-10, atol=1e-10)


def test_two_scenes_in_one_batch_equal_each_alone():
    x, mask = random_sparse_grid((10, 10, 10), 4, 0.3, batch=2, seed=7)
    both = SparseTensor.from_dense(x, mask)
    net = torch.nn.ModuleList([SparseConv(4, 8, 3), SparseConv(8, 8, 2, stride=2), SparseConvTranspose(8, 5, 2, stride=2)])

    def run(t):
        for layer in net:
            t = layer(t)
        return t

    out = run(both)
    for b in range(2):
        alone = SparseTensor.from_dense(x[b:b + 1], mask[b:b + 1])
        ref = run(alone)
        rows = both.C[:, 0] == b
        torch.testing.assert_close(out.F[rows], ref.F, rtol=1e-5, atol=1e-6)


def test_deterministic_run_to_run():
    x, mask = random_sparse_grid((16, 16, 16), 8, 0.3, seed=11)
    conv = SparseConv(8, 8, 3)
    outs = []
    for _ in range(2):
        f = SparseTensor.from_dense(x, mask).F.clone().requires_grad_(True)
        y = conv(SparseTensor(f, SparseTensor.from_dense(x, mask).C))
        y.F.square().sum().backward()
        outs.append((y.F.detach().clone(), f.grad.clone(), conv.weight.grad.clone()))
        conv.weight.grad = None
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_kernel_maps_are_cached_and_reused_transposed():
    x, mask = random_sparse_grid((10, 10, 10), 2, 0.3)
    s = SparseTensor.from_dense(x, mask)
    a = SparseConv(2, 2, 3)(s)
    b = SparseConv(2, 2, 3)(a)
    assert len(a.context._maps) == 1 and b.context is s.context
    down = SparseConv(2, 2, 2, stride=2)(b)
    up = SparseConvTranspose(2, 2, 2, stride=2)(down)
    fwd = s.context.kernel_map((1, 1, 1), (2, 2, 2), (2, 2, 2), (1, 1, 1))
    bwd = s.context.kernel_map((2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1), transposed=True)
    assert bwd is fwd.transposed() and bwd.transposed() is fwd                 # one map, cached both ways
    pairs = lambda m: set(zip(m.in_idx.tolist(), m.out_idx.tolist()))        # noqa: E731
    assert pairs(bwd) == {(o, i) for i, o in pairs(fwd)} and len(pairs(fwd)) == fwd.n_in   # stride 2: each fine site once
    assert up.context is s.context


def test_bfloat16_autocast_close_to_fp32():
    x, mask = random_sparse_grid((12, 12, 12), 16, 0.3, seed=2)
    s = SparseTensor.from_dense(x, mask)
    conv = SparseConv(16, 16, 3)
    ref = conv(s).F
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(s).F
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
