"""Sparse convolution and pooling on kernel maps: gather → GEMM → scatter per kernel offset.

Each offset k multiplies the gathered input rows ``feats[in_idx_k]`` by ``weight[k]`` (C_in, C_out)
and adds the result into ``out[out_idx_k]``. The identity offset of a submanifold map is a plain
matrix product with no gather or scatter. The backward pass recomputes the gathers instead of
storing them, so memory stays at the size of the features.

Everything here is plain torch and runs on any device. On CUDA, ``index_add_`` uses atomics, so
sums are not bit-reproducible run to run there; on CPU they are.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .kmap import KernelMap

__all__ = ["sparse_conv", "sparse_pool", "global_pool"]


def _conv_forward(feats: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
    out = feats.new_zeros((kmap.n_out, weight.shape[2]))
    for k in range(kmap.kernel_volume):
        if kmap.ptr[k] == kmap.ptr[k + 1]:
            continue
        if k == kmap.identity:
            out.addmm_(feats, weight[k])
            continue
        in_idx, out_idx = kmap.pairs(k)
        out.index_add_(0, out_idx, feats.index_select(0, in_idx) @ weight[k])
    return out


class _SparseConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        return _conv_forward(feats, weight, kmap)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        feats, weight = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = _conv_forward(grad_out, weight.transpose(1, 2), kmap.transposed())
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight)
            for k in range(kmap.kernel_volume):
                if kmap.ptr[k] == kmap.ptr[k + 1]:
                    continue
                if k == kmap.identity:
                    torch.mm(feats.t(), grad_out, out=grad_weight[k])
                    continue
                in_idx, out_idx = kmap.pairs(k)
                torch.mm(feats.index_select(0, in_idx).t(), grad_out.index_select(0, out_idx),
                         out=grad_weight[k])
        return grad_feats, grad_weight, None


def sparse_conv(feats: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
    """Apply a sparse convolution.

    feats: (N_in, C_in) float. weight: (K, C_in, C_out), K = kmap.kernel_volume.
    Returns (N_out, C_out) in the dtype of ``feats`` (weights are cast under autocast).
    """
    if weight.ndim != 3 or weight.shape[0] != kmap.kernel_volume or weight.shape[1] != feats.shape[1]:
        raise ValueError(f"weight must be (K={kmap.kernel_volume}, C_in={feats.shape[1]}, C_out), "
                         f"got {tuple(weight.shape)}")
    if feats.shape[0] != kmap.n_in:
        raise ValueError(f"feats has {feats.shape[0]} rows but the kernel map expects {kmap.n_in} input sites")
    if torch.is_autocast_enabled(feats.device.type):
        dtype = torch.get_autocast_dtype(feats.device.type)
        feats, weight = feats.to(dtype), weight.to(dtype)
    elif weight.dtype != feats.dtype:
        weight = weight.to(feats.dtype)
    with torch.autocast(feats.device.type, enabled=False):
        return _SparseConvFunction.apply(feats, weight, kmap)


def sparse_pool(feats: Tensor, kmap: KernelMap, mode: str) -> Tensor:
    """Max or average pooling over a kernel map: feats (N_in, C) → (N_out, C)."""
    gathered = feats.index_select(0, kmap.in_idx)
    index = kmap.out_idx[:, None].expand_as(gathered)
    out = feats.new_zeros((kmap.n_out, feats.shape[1]))
    if mode == "max":
        return out.scatter_reduce(0, index, gathered, reduce="amax", include_self=False)
    if mode == "avg":
        return out.scatter_reduce(0, index, gathered, reduce="mean", include_self=False)
    raise ValueError(f"pooling mode must be 'max' or 'avg', got {mode!r}")


def global_pool(feats: Tensor, batch: Tensor, batch_size: int, mode: str) -> Tensor:
    """Pool all sites of each scene: feats (N, C), batch (N,) int64 → (B, C)."""
    index = batch.long()[:, None].expand_as(feats)
    out = feats.new_zeros((batch_size, feats.shape[1]))
    if mode == "max":
        return out.scatter_reduce(0, index, feats, reduce="amax", include_self=False)
    if mode == "avg":
        return out.scatter_reduce(0, index, feats, reduce="mean", include_self=False)
    if mode == "sum":
        return out.index_add(0, batch.long(), feats)
    raise ValueError(f"global pooling mode must be 'max', 'avg' or 'sum', got {mode!r}")
