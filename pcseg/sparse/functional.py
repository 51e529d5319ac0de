"""Sparse convolution and pooling on kernel maps.

Three kernels compute a convolution (chosen by :func:`~pcseg.sparse.kernels.conv_backend`):

* ``"cpu"`` (the default for float32 CPU tensors where the compiled kernels build): one
  output-stationary pass through the map's neighbour table (:mod:`pcseg.sparse.kernels.cpu`); no
  pair buffer, no scatter, the same bits at any thread count.
* ``"fused"``: the Triton kernels (:mod:`pcseg.sparse.kernels.implicit_gemm`).
* ``"torch"``: gather → GEMM → scatter per kernel offset, described next.

On the torch path each offset k gathers its input rows into a small scratch buffer and multiplies them by ``weight[k]``
(C_in, C_out) into its slice of one (P, C_out) buffer, and a cached sparse CSR matrix sums the buffer rows into
their output sites (a segment sum: no atomics, the same result run to run). The identity offset of a
submanifold map is a plain matrix product with no gather or scatter. Reductions accumulate in
float32 under bf16/fp16 autocast. The backward pass recomputes the gathers instead of storing them.
Scratch buffers come from the kernel map's :class:`~pcseg.sparse.kmap.Workspace`, shared by the
layers of one pass, so large CPU buffers are not faulted in anew by every layer.

The torch path is plain torch and runs on CPU and CUDA tensors alike.

A traced kernel map (``torch.export`` / ``torch.compile``, :meth:`KernelMap.from_table`) has a fixed
(N_out, K) neighbour table instead of grouped pairs. The convolution then takes one of three traced
forms (:func:`~pcseg.sparse.kernels.traced_conv`): ``"pairs"`` (default) takes each offset's
present pairs from the table (one ``nonzero`` per offset, a data-dependent size) and adds
``gather_k(feats) @ W[k]`` into their output rows; ``"table"`` gathers every offset through the
table, a zero row for each missing neighbour (more multiplications, faster Inductor compiles).
Both are plain differentiable ops that export, compile and ONNX express. ``"kernel"`` is one call
of the compiled CPU kernel per convolution (``pcseg::conv_forward``, float32 CPU): the program then
names an op of pcseg's kernel library, which the process that runs it must load (no ONNX).
Pooling reduces the rows gathered through the table.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .kernels import conv_kernel, traced_conv_name
from .kernels import cpu as cpu_kernels
from .kmap import KernelMap

__all__ = ["sparse_conv", "sparse_pool", "global_pool"]


def _conv_forward(feats: Tensor, weight: Tensor, kmap: KernelMap, kernel: str) -> Tensor:
    """out = Σ_k scatter_k(gather_k(feats) @ weight[k]); feats (N_in, C_in), weight (K, C_in, C_out).

    kernel: "torch", "cpu" or "fused" (:func:`~pcseg.sparse.kernels.conv_kernel`).
    """
    if kernel == "cpu":
        return cpu_kernels.conv_forward(feats, kmap.neighbor_table(), weight)
    if kernel == "fused":
        from .kernels.implicit_gemm import implicit_gemm_conv  # imports Triton only when asked for
        return implicit_gemm_conv(feats, weight, kmap.neighbor_table())
    acc_dtype = torch.promote_types(feats.dtype, torch.float32)
    c_in, c_out = weight.shape[1], weight.shape[2]
    ws, device = kmap.workspace, feats.device
    if kmap.identity >= 0:
        out = (feats @ weight[kmap.identity]).to(acc_dtype)
    else:
        out = torch.zeros((kmap.n_out, c_out), dtype=acc_dtype, device=device)
    num_pairs = kmap.in_idx.numel()
    if num_pairs:
        products = ws.get("products", num_pairs, c_out, feats.dtype, device)      # (P, C_out)
        for k in range(kmap.kernel_volume):
            s, e = kmap.ptr[k], kmap.ptr[k + 1]
            if e > s:
                gathered = ws.get("gather", e - s, c_in, feats.dtype, device)     # (P_k, C_in)
                torch.index_select(feats, 0, kmap.in_idx[s:e], out=gathered)
                torch.mm(gathered, weight[k], out=products[s:e])
        if products.dtype != acc_dtype:
            products = ws.get("products_acc", num_pairs, c_out, acc_dtype, device).copy_(products)
        out.add_(kmap.reducer(acc_dtype) @ products)                              # deterministic segment sum
    return out.to(feats.dtype)


def _conv_pairs(feats: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
    """Traced convolution, form ``"pairs"``: over the map's present pairs, in float32 or wider.

    Per offset k (:meth:`~pcseg.sparse.kmap.KernelMap.offset_pairs`: data-dependent sizes computed
    once per map inside the graph), a gather of its input rows, a matrix product and an index-add
    into its output rows. Only present neighbours are multiplied, and no add has two updates of
    one row (each offset's output rows are distinct), so no executor can race on them: ONNX
    Runtime's multi-threaded ScatterND loses updates to a row indexed twice. The identity offset
    of a submanifold map multiplies the features directly. Plain differentiable ops (NonZero,
    Gather, MatMul, ScatterND-add in ONNX).
    feats (N_in, C_in), weight (K, C_in, C_out) → (N_out, C_out) in the dtype of ``feats``.
    """
    acc_dtype = torch.promote_types(feats.dtype, torch.float32)
    if kmap.identity >= 0:
        out = (feats @ weight[kmap.identity]).to(acc_dtype)
    else:
        out = feats.new_zeros((kmap.n_out, weight.shape[2]), dtype=acc_dtype)
    for k, in_rows, out_rows in kmap.offset_pairs():
        out.index_add_(0, out_rows, (feats.index_select(0, in_rows) @ weight[k]).to(acc_dtype))
    return out.to(feats.dtype)


#: Gathered feature columns per matrix product of a traced convolution: offsets are grouped so that
#: a group's (N_out, offsets × C_in) gather stays near this width, trading memory for fewer ops.
TABLE_GATHER_WIDTH = 512


def _conv_table(feats: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
    """Traced convolution, form ``"table"``: Σ_k padded[gather_index[:, k]] @ weight[k], in float32 or wider.

    Offsets are taken in static groups of ``max(1, TABLE_GATHER_WIDTH // C_in)``: one gather of
    (N_out, g, C_in) rows and one (N_out, g·C_in) @ (g·C_in, C_out) product per group. The identity
    offset of a submanifold map multiplies the features directly.
    feats (N_in, C_in), weight (K, C_in, C_out) → (N_out, C_out) in the dtype of ``feats``.
    """
    acc_dtype = torch.promote_types(feats.dtype, torch.float32)
    c_in, c_out = weight.shape[1], weight.shape[2]
    index = kmap.gather_index()
    padded = torch.cat([feats, feats.new_zeros((1, c_in))])
    group = max(1, TABLE_GATHER_WIDTH // c_in)
    k_vol, identity = kmap.kernel_volume, kmap.identity
    runs = [(0, identity), (identity + 1, k_vol)] if identity >= 0 else [(0, k_vol)]
    out = (feats @ weight[identity]).to(acc_dtype) if identity >= 0 else None
    for first, end in runs:
        for start in range(first, end, group):
            stop = min(start + group, end)
            rows = padded[index[:, start:stop]].reshape(-1, (stop - start) * c_in)      # (N_out, g * C_in)
            term = (rows @ weight[start:stop].reshape(-1, c_out)).to(acc_dtype)
            out = term if out is None else out + term
    return out.to(feats.dtype)


def _conv_weight_grad(feats: Tensor, grad_out: Tensor, weight: Tensor, kmap: KernelMap, kernel: str) -> Tensor:
    """dL/dW[k] = gather_k(feats)^T @ gather_k(grad_out), (K, C_in, C_out), on ``kernel``."""
    if kernel == "cpu":
        return cpu_kernels.conv_weight_grad(feats, grad_out, kmap.columns())
    if kernel == "fused":
        from .kernels.implicit_gemm import implicit_gemm_weight_grad
        return implicit_gemm_weight_grad(feats, grad_out, kmap.neighbor_table())
    grad_weight = torch.zeros_like(weight)
    ws, device = kmap.workspace, feats.device
    for k in range(kmap.kernel_volume):
        s, e = kmap.ptr[k], kmap.ptr[k + 1]
        if e > s:
            gathered_in = ws.get("gather", e - s, feats.shape[1], feats.dtype, device)
            gathered_grad = ws.get("gather_grad", e - s, grad_out.shape[1], grad_out.dtype, device)
            torch.index_select(feats, 0, kmap.in_idx[s:e], out=gathered_in)
            torch.index_select(grad_out, 0, kmap.out_idx[s:e], out=gathered_grad)
            torch.mm(gathered_in.t(), gathered_grad, out=grad_weight[k])
    if kmap.identity >= 0:
        torch.mm(feats.t(), grad_out, out=grad_weight[kmap.identity])
    return grad_weight


def _conv_kernel(feats: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
    """Traced convolution, form ``"kernel"``: one ``pcseg::conv_forward`` op through the neighbour table.

    feats (N_in, C_in) float32 CPU, weight (K, C_in, C_out) float32 → (N_out, C_out) float32.
    Raises ValueError for another dtype or device, RuntimeError where the kernels cannot be built.
    """
    if feats.device.type != "cpu" or feats.dtype != torch.float32:
        raise ValueError(f"traced_conv('kernel') runs the compiled CPU kernel on float32 CPU tensors, got "
                         f"{feats.dtype} on {feats.device}; trace with traced_conv('pairs')")
    return cpu_kernels.conv_forward(feats, kmap.neighbor_table(), weight)


_TRACED = {"pairs": _conv_pairs, "table": _conv_table, "kernel": _conv_kernel}
"""The traced forms of a convolution (:data:`~pcseg.sparse.kernels.TRACED_CONVS`)."""


class _SparseConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: Tensor, weight: Tensor, kmap: KernelMap) -> Tensor:
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        ctx.kernel = conv_kernel(feats.device, feats.dtype)  # the kernel chosen now also runs the backward
        return _conv_forward(feats, weight, kmap, ctx.kernel)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        feats, weight = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            if kmap.identity >= 0:
                # A submanifold map is symmetric: its transpose is itself with the offsets reversed,
                # so the input gradient reuses this map (and its cached reducer) with flipped weights.
                grad_feats = _conv_forward(grad_out, weight.flip(0).transpose(1, 2), kmap, ctx.kernel)
            else:
                grad_feats = _conv_forward(grad_out, weight.transpose(1, 2), kmap.transposed(), ctx.kernel)
        if ctx.needs_input_grad[1]:
            grad_weight = _conv_weight_grad(feats, grad_out, weight, kmap, ctx.kernel)
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
    conv = _TRACED[traced_conv_name()] if kmap.traced else _SparseConvFunction.apply
    if torch.is_autocast_enabled(feats.device.type):
        dtype = torch.get_autocast_dtype(feats.device.type)
        with torch.autocast(feats.device.type, enabled=False):
            return conv(feats.to(dtype), weight.to(dtype), kmap)
    # no autocast region otherwise: torch.export wraps each one in a higher-order op, slow to trace
    return conv(feats, weight.to(feats.dtype), kmap)


def sparse_pool(feats: Tensor, kmap: KernelMap, mode: str) -> Tensor:
    """Max or average pooling over a kernel map: feats (N_in, C) → (N_out, C)."""
    if kmap.identity >= 0:
        raise ValueError("pooling needs a strided kernel map (stride > 1), got a submanifold map")
    if mode not in ("max", "avg"):
        raise ValueError(f"pooling mode must be 'max' or 'avg', got {mode!r}")
    if kmap.traced:
        return _pool_table(feats, kmap, mode)
    gathered = feats.index_select(0, kmap.in_idx)
    index = kmap.out_idx[:, None].expand_as(gathered)
    out = feats.new_zeros((kmap.n_out, feats.shape[1]))
    if mode == "max":
        return out.scatter_reduce(0, index, gathered, reduce="amax", include_self=False)
    return out.scatter_reduce(0, index, gathered, reduce="mean", include_self=False)


def _pool_table(feats: Tensor, kmap: KernelMap, mode: str) -> Tensor:
    """Traced pooling over the neighbour table: max or mean of the present rows, (N_out, C).

    A site without inputs gets zeros, as on the pair path.
    """
    present = (kmap.neighbor_table() >= 0)[:, :, None]                      # (N_out, K, 1)
    gathered = torch.cat([feats, feats.new_zeros((1, feats.shape[1]))])[kmap.gather_index()]
    count = present.sum(dim=1)                                              # (N_out, 1)
    if mode == "max":
        pooled = gathered.masked_fill(~present, float("-inf")).amax(dim=1)
        return torch.where(count > 0, pooled, 0.0)
    return gathered.sum(dim=1) / count.clamp(min=1).to(feats.dtype)


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
