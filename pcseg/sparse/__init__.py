"""pcseg.sparse: pure-PyTorch sparse tensors and convolutions in any dimension.

Imports nothing else from pcseg, so robot code can use it alone::

    from pcseg.sparse import SparseTensor, voxelize
"""
from .coords import CoordinateOverflowError, pack_keys, unpack_keys
from .context import CoordinateContext
from .functional import global_pool, sparse_conv, sparse_pool
from .kmap import KernelMap, kernel_offsets
from .nn import (SparseAvgPool, SparseBatchNorm, SparseConv, SparseConvTranspose, SparseFeatureMap,
                 SparseGlobalPool, SparseMaxPool, SparseReLU, sparse_cat)
from .tensor import SparseTensor
from .voxelize import Voxelized, voxelize

__all__ = [
    "SparseTensor", "CoordinateContext", "CoordinateOverflowError", "KernelMap", "Voxelized",
    "voxelize", "pack_keys", "unpack_keys", "kernel_offsets", "sparse_conv", "sparse_pool", "global_pool",
    "SparseConv", "SparseConvTranspose", "SparseMaxPool", "SparseAvgPool", "SparseGlobalPool",
    "SparseBatchNorm", "SparseReLU", "SparseFeatureMap", "sparse_cat",
]
