"""The fused Triton convolution (pcseg.sparse.kernels) against brute force, and its switch.

The dense-oracle tests of tests/sparse/test_conv.py also run with the kernel on (``conv_path``).
"""
import pytest
import torch

from pcseg.sparse import SparseConv, SparseTensor
from pcseg.sparse.kernels import conv_backend, conv_kernel


def test_neighbor_table_by_hand():
    # 1-D sites 0, 1, 3 with a size-3 kernel (offsets -1, 0, +1)
    x = SparseTensor(torch.zeros(3, 1), torch.tensor([[0, 0], [0, 1], [0, 3]], dtype=torch.int32))
    kmap = x.context.kernel_map((1,), (3,), (1,), (1,))
    assert kmap.neighbor_table().tolist() == [[-1, 0, 1], [0, 1, -1], [-1, 2, -1]]


def test_the_kernel_is_an_explicit_choice(monkeypatch):
    from pcseg.sparse.kernels import cpu
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("PCSEG_FUSED_CONV", "1")  # the old environment switch no longer chooses anything
    cpu_dev, f32 = torch.device("cpu"), torch.float32
    default = "cpu" if cpu.available() else "torch"
    assert conv_kernel(cpu_dev, f32) == default
    assert conv_kernel(cpu_dev, torch.bfloat16) == "torch"          # the compiled kernels are float32 only
    with conv_backend("fused"):
        assert conv_kernel(cpu_dev, f32) == "fused"
        with conv_backend("torch"):
            assert conv_kernel(cpu_dev, f32) == "torch"
        assert conv_kernel(cpu_dev, f32) == "fused"
    assert conv_kernel(cpu_dev, f32) == default
    with pytest.raises(ValueError, match="expected one of auto, torch, cpu, fused, got 'triton'"):
        with conv_backend("triton"):
            pass
    with conv_backend("cpu"), pytest.raises(RuntimeError, match="take float32 CPU tensors, got torch.float16"):
        conv_kernel(cpu_dev, torch.float16)
    monkeypatch.setattr(cpu, "_library", None)
    monkeypatch.setattr(cpu, "_error", "CalledProcessError: no compiler")  # a machine where the build failed
    assert conv_kernel(cpu_dev, f32) == "torch"
    with conv_backend("cpu"), pytest.raises(RuntimeError, match=r"could not be built \(CalledProcessError"):
        conv_kernel(cpu_dev, f32)
    with pytest.raises(RuntimeError, match=r"could not be built here \(CalledProcessError"):
        cpu.library_path()
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # Triton not installed
    with conv_backend("fused"), pytest.raises(RuntimeError, match="Triton cannot run on cpu"):
        conv_kernel(cpu_dev, f32)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 3e-2)])
def test_implicit_gemm_equals_a_sum_over_the_neighbour_table(triton_kernels, dtype, tol):
    from pcseg.sparse.kernels.implicit_gemm import implicit_gemm_conv

    g = torch.Generator().manual_seed(0)
    n_in, n_out, k, c_in, c_out = 230, 150, 7, 40, 80  # several row, input- and output-channel blocks, tails
    feats = torch.randn(n_in, c_in, generator=g).to(dtype)
    weight = (torch.randn(k, c_in, c_out, generator=g) / c_in ** 0.5).to(dtype)
    table = torch.randint(-1, n_in, (n_out, k), generator=g, dtype=torch.int32)
    expected = torch.zeros(n_out, c_out, dtype=torch.float64)
    for i in range(n_out):
        for j in range(k):
            if table[i, j] >= 0:
                expected[i] += feats[table[i, j]].double() @ weight[j].double()
    out = implicit_gemm_conv(feats, weight, table)
    assert out.dtype == dtype and out.shape == (n_out, c_out)
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_weight_gradient_equals_a_sum_over_the_neighbour_table(triton_kernels, dtype, tol):
    from pcseg.sparse.kernels.implicit_gemm import implicit_gemm_weight_grad

    g = torch.Generator().manual_seed(1)
    n_in, n_out, k, c_in, c_out = 120, 150, 5, 20, 40  # more rows than one block, channel tails
    feats = torch.randn(n_in, c_in, generator=g).to(dtype)
    grad_out = (torch.randn(n_out, c_out, generator=g) / 4).to(dtype)
    table = torch.randint(-1, n_in, (n_out, k), generator=g, dtype=torch.int32)
    expected = torch.zeros(k, c_in, c_out, dtype=torch.float64)
    for i in range(n_out):
        for j in range(k):
            if table[i, j] >= 0:
                expected[j] += torch.outer(feats[table[i, j]].double(), grad_out[i].double())
    out = implicit_gemm_weight_grad(feats, grad_out, table)
    assert out.dtype == dtype and out.shape == (k, c_in, c_out)
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)


def test_sparse_conv_calls_the_kernel_when_switched_on(triton_kernels, monkeypatch):
    import pcseg.sparse.kernels.implicit_gemm as fused

    calls = []
    kernel, weight_kernel = fused.implicit_gemm_conv, fused.implicit_gemm_weight_grad
    monkeypatch.setattr(fused, "implicit_gemm_conv", lambda *a: calls.append("conv") or kernel(*a))
    monkeypatch.setattr(fused, "implicit_gemm_weight_grad", lambda *a: calls.append("wgrad") or weight_kernel(*a))
    coords = torch.unique(torch.randint(0, 6, (60, 3), generator=torch.Generator().manual_seed(1)), dim=0)
    x = SparseTensor(torch.randn(len(coords), 4), torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], 1))
    conv = SparseConv(4, 8, 3)
    reference = conv(x).F
    assert not calls
    with conv_backend("fused"):
        out = conv(x).F
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert calls == ["conv"]
    out.sum().backward()  # outside the block: the backward pass keeps the backend of its forward pass
    assert calls == ["conv", "wgrad"]
