"""torch.nn-style layers on :class:`SparseTensor` in any dimension D.

The class says the coordinate rule: :class:`SparseConv` with stride 1 is submanifold (outputs on
the input sites), with stride > 1 it is strided (outputs at ``floor(c / s) * s``);
:class:`SparseConvTranspose` goes back to the finer coordinates produced earlier in the context.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .coords import tracing
from .functional import global_pool, sparse_conv, sparse_pool
from .tensor import SparseTensor, to_tuple

__all__ = ["SparseConv", "SparseConvTranspose", "SparseMaxPool", "SparseAvgPool", "SparseGlobalPool",
           "SparseBatchNorm", "SparseReLU", "SparseFeatureMap", "sparse_cat"]

IntOrTuple = int | Sequence[int]


class _ConvBase(nn.Module):
    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple = 3,
                 stride: IntOrTuple = 1, dilation: IntOrTuple = 1, bias: bool = False, dim: int = 3):
        super().__init__()
        self.in_channels, self.out_channels, self.dim = in_channels, out_channels, dim
        self.kernel_size = to_tuple(kernel_size, dim, "kernel_size")
        self.stride = to_tuple(stride, dim, "stride")
        self.dilation = to_tuple(dilation, dim, "dilation")
        volume = math.prod(self.kernel_size)
        self.weight = nn.Parameter(torch.empty(volume, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ±1/sqrt(fan_in), fan_in = K * C_in (torch's default for dense convs)."""
        bound = 1.0 / math.sqrt(self.weight.shape[0] * self.in_channels)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, dilation={self.dilation}, bias={self.bias is not None}, dim={self.dim}")

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.dim != self.dim:
            raise ValueError(f"{type(self).__name__} is {self.dim}-D, input is {x.dim}-D")
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, got {x.feats.shape[1]}")
        kmap = x.context.kernel_map(x.stride, self.kernel_size, self.stride, self.dilation, self.transposed)
        if self.transposed:
            out_stride = tuple(a // b for a, b in zip(x.stride, self.stride))
        else:
            out_stride = tuple(a * b for a, b in zip(x.stride, self.stride))
        out = sparse_conv(x.feats, self.weight, kmap)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return SparseTensor(out, x.context.coords(out_stride), out_stride, x.context)


class SparseConv(_ConvBase):
    """Sparse convolution. weight: (K, C_in, C_out) in the offset order of :mod:`pcseg.sparse.kmap`.

    stride 1: submanifold (same sites). stride s > 1: outputs at ``unique(floor(c / s) * s)``.
    """


class SparseConvTranspose(_ConvBase):
    """Transposed sparse convolution onto the finer coordinates (``stride / s``) of the same context.

    Its kernel map is the transpose of the matching strided convolution's, so a U-Net decoder reuses
    the encoder's map; weight (K, C_in, C_out) with ``out[c] += in[o] @ W[k]`` for ``c = o + offset_k``.
    """

    transposed = True


class _PoolBase(nn.Module):
    mode = ""

    def __init__(self, kernel_size: IntOrTuple = 2, stride: IntOrTuple | None = None, dim: int = 3):
        super().__init__()
        self.dim = dim
        self.kernel_size = to_tuple(kernel_size, dim, "kernel_size")
        self.stride = to_tuple(kernel_size if stride is None else stride, dim, "stride")

    def forward(self, x: SparseTensor) -> SparseTensor:
        kmap = x.context.kernel_map(x.stride, self.kernel_size, self.stride, (1,) * self.dim)
        out_stride = tuple(a * b for a, b in zip(x.stride, self.stride))
        return SparseTensor(sparse_pool(x.feats, kmap, self.mode), x.context.coords(out_stride), out_stride, x.context)


class SparseMaxPool(_PoolBase):
    """Max over the input sites in each output site's kernel window."""

    mode = "max"


class SparseAvgPool(_PoolBase):
    """Mean over the occupied input sites in each output site's kernel window."""

    mode = "avg"


class SparseGlobalPool(nn.Module):
    """Pool every scene of the batch to one vector: (N, C) → (B, C) dense tensor."""

    def __init__(self, mode: str = "avg"):
        super().__init__()
        self.mode = mode

    def forward(self, x: SparseTensor) -> Tensor:
        return global_pool(x.feats, x.coords[:, 0], x.batch_size, self.mode)


class SparseFeatureMap(nn.Module):
    """Apply a module that maps (N, C) → (N, C') to the features, keeping the sites."""

    def __init__(self, module: nn.Module | Callable[[Tensor], Tensor]):
        super().__init__()
        self.module = module

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(self.module(x.feats))


class SparseBatchNorm(SparseFeatureMap):
    """BatchNorm over the sites' features (statistics over all sites of the batch)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(nn.BatchNorm1d(num_features, eps=eps, momentum=momentum))

    def forward(self, x: SparseTensor) -> SparseTensor:
        if self.training and tracing():
            # BatchNorm's own "more than 1 value per channel" check cannot branch on a traced size
            torch._check(x.feats.shape[0] > 1, lambda: "BatchNorm in training needs more than one site")
        return super().forward(x)


class SparseReLU(SparseFeatureMap):
    def __init__(self, inplace: bool = True):
        super().__init__(nn.ReLU(inplace=inplace))


def sparse_cat(*tensors: SparseTensor) -> SparseTensor:
    """Concatenate the features of tensors on the same sites (U-Net skips)."""
    first = tensors[0]
    for t in tensors[1:]:
        first._check_same_sites(t, "sparse_cat")
    return first.replace(torch.cat([t.feats for t in tensors], dim=1))
