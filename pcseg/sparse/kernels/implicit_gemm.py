"""Triton implicit-GEMM sparse convolution: gather, multiply and sum in one kernel (and its weight gradient).

Each program computes a (BLOCK_N, BLOCK_CO) tile of the output: for every kernel offset it loads
the tile's neighbour rows of ``feats`` through the (N_out, K) neighbour table (-1: no neighbour,
read as zeros), multiplies them by ``weight[k]`` and accumulates in float32 registers, then writes
the tile once. No pair buffer, no scatter, no atomics: every output row is summed in the same order
on every run. Imported only when a fused convolution is asked for (:mod:`pcseg.sparse.kernels`);
on a machine without a GPU it runs under ``TRITON_INTERPRET=1`` on CPU tensors (the tests).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["implicit_gemm_conv", "implicit_gemm_weight_grad"]


@triton.jit
def _tile_dot(a, b, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b of two tiles in float32: IEEE for float32 inputs (not TF32); UPCAST: multiply as float32."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    elif IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _implicit_gemm_kernel(feats_ptr, weight_ptr, table_ptr, out_ptr, n_out, c_in, c_out, kernel_volume,
                          stride_feats, stride_wk, stride_wi, stride_table, stride_out,
                          BLOCK_N: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
                          IEEE: tl.constexpr, UPCAST: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    row_ok, col_ok = rows < n_out, cols < c_out
    acc = tl.zeros((BLOCK_N, BLOCK_CO), dtype=tl.float32)
    for k in range(kernel_volume):
        nbr = tl.load(table_ptr + rows.to(tl.int64) * stride_table + k, mask=row_ok, other=-1).to(tl.int64)
        has = nbr >= 0
        for ci in range(0, c_in, BLOCK_CI):
            chans = ci + tl.arange(0, BLOCK_CI)
            chan_ok = chans < c_in
            a = tl.load(feats_ptr + nbr[:, None] * stride_feats + chans[None, :],
                        mask=has[:, None] & chan_ok[None, :], other=0.0)
            b = tl.load(weight_ptr + k * stride_wk + chans[:, None] * stride_wi + cols[None, :],
                        mask=chan_ok[:, None] & col_ok[None, :], other=0.0)
            acc += _tile_dot(a, b, IEEE, UPCAST)
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_out + cols[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _weight_grad_kernel(feats_ptr, grad_ptr, table_ptr, out_ptr, n_out, c_in, c_out,
                        stride_feats, stride_grad, stride_table, stride_ok, stride_oi,
                        BLOCK_N: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
                        IEEE: tl.constexpr, UPCAST: tl.constexpr):
    k = tl.program_id(0)
    chans = tl.program_id(1) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    cols = tl.program_id(2) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    chan_ok, col_ok = chans < c_in, cols < c_out
    acc = tl.zeros((BLOCK_CI, BLOCK_CO), dtype=tl.float32)
    for start in range(0, n_out, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        row_ok = rows < n_out
        nbr = tl.load(table_ptr + rows.to(tl.int64) * stride_table + k, mask=row_ok, other=-1).to(tl.int64)
        has = nbr >= 0
        a = tl.load(feats_ptr + nbr[:, None] * stride_feats + chans[None, :],
                    mask=has[:, None] & chan_ok[None, :], other=0.0)
        g = tl.load(grad_ptr + rows.to(tl.int64)[:, None] * stride_grad + cols[None, :],
                    mask=has[:, None] & col_ok[None, :], other=0.0)
        acc += _tile_dot(tl.trans(a), g, IEEE, UPCAST)
    tl.store(out_ptr + k * stride_ok + chans[:, None] * stride_oi + cols[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=chan_ok[:, None] & col_ok[None, :])


def _block(size: int, smallest: int = 16, largest: int = 64) -> int:
    return max(smallest, min(largest, triton.next_power_of_2(size)))


def implicit_gemm_conv(feats: Tensor, weight: Tensor, table: Tensor) -> Tensor:
    """out[i] = Σ_k feats[table[i, k]] @ weight[k] over the k with table[i, k] >= 0.

    feats: (N_in, C_in) float32 / float16 / bfloat16, contiguous. weight: (K, C_in, C_out), same dtype.
    table: (N_out, K) int32 neighbour table (-1 where there is none). Returns (N_out, C_out) in the
    dtype of ``feats``, accumulated in float32 (float32 inputs multiply in IEEE precision, not TF32).
    Triton's interpreter has no bfloat16 arithmetic, so there bfloat16 tiles are multiplied as float32.
    """
    feats, weight, table = feats.contiguous(), weight.contiguous(), table.contiguous()
    n_out, kernel_volume = table.shape
    c_in, c_out = weight.shape[1], weight.shape[2]
    out = torch.empty((n_out, c_out), dtype=feats.dtype, device=feats.device)
    if n_out == 0:
        return out
    block_n, block_ci, block_co = 64, _block(c_in, largest=32), _block(c_out)
    grid = (triton.cdiv(n_out, block_n), triton.cdiv(c_out, block_co))
    _implicit_gemm_kernel[grid](feats, weight, table, out, n_out, c_in, c_out, kernel_volume,
                                feats.stride(0), weight.stride(0), weight.stride(1), table.stride(0), out.stride(0),
                                BLOCK_N=block_n, BLOCK_CI=block_ci, BLOCK_CO=block_co,
                                IEEE=feats.dtype == torch.float32, UPCAST=_upcast(feats.dtype))
    return out


def implicit_gemm_weight_grad(feats: Tensor, grad_out: Tensor, table: Tensor) -> Tensor:
    """dL/dW[k] = Σ_i feats[table[i, k]]^T grad_out[i] over the i with table[i, k] >= 0.

    feats: (N_in, C_in); grad_out: (N_out, C_out), same dtype; table: (N_out, K) int32 as in
    :func:`implicit_gemm_conv`. Returns (K, C_in, C_out) in the dtype of ``feats``, each entry summed
    in float32 by one program in row order (deterministic).
    """
    feats, grad_out, table = feats.contiguous(), grad_out.contiguous(), table.contiguous()
    n_out, kernel_volume = table.shape
    c_in, c_out = feats.shape[1], grad_out.shape[1]
    out = torch.empty((kernel_volume, c_in, c_out), dtype=feats.dtype, device=feats.device)
    block_ci, block_co = _block(c_in), _block(c_out)
    grid = (kernel_volume, triton.cdiv(c_in, block_ci), triton.cdiv(c_out, block_co))
    _weight_grad_kernel[grid](feats, grad_out, table, out, n_out, c_in, c_out,
                              feats.stride(0), grad_out.stride(0), table.stride(0), out.stride(0), out.stride(1),
                              BLOCK_N=64, BLOCK_CI=block_ci, BLOCK_CO=block_co,
                              IEEE=feats.dtype == torch.float32, UPCAST=_upcast(feats.dtype))
    return out


def _upcast(dtype: torch.dtype) -> bool:
    """Triton's interpreter has no bfloat16 arithmetic: there, bfloat16 tiles multiply as float32."""
    return dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"
