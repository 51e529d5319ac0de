"""Residual blocks on sparse tensors (the ResNet basic block, in any D)."""
from __future__ import annotations

from typing import Optional

from torch import nn

from pcseg.sparse import SparseBatchNorm, SparseConv, SparseReLU, SparseTensor

__all__ = ["BasicBlock", "conv_bn_relu", "make_stage"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int, dim: int,
                 bn_momentum: float = 0.1) -> nn.Sequential:
    """SparseConv → BatchNorm → ReLU."""
    return nn.Sequential(SparseConv(in_channels, out_channels, kernel_size, stride=stride, dim=dim),
                         SparseBatchNorm(out_channels, momentum=bn_momentum), SparseReLU())


def _projection(in_channels: int, out_channels: int, dim: int, bn_momentum: float) -> Optional[nn.Module]:
    """The residual branch's 1×1 conv + BN when the channel count changes, else None (identity)."""
    if in_channels == out_channels:
        return None
    return nn.Sequential(SparseConv(in_channels, out_channels, 1, dim=dim),
                         SparseBatchNorm(out_channels, momentum=bn_momentum))


class BasicBlock(nn.Module):
    """conv3 → BN → ReLU → conv3 → BN, plus identity (or 1×1 conv + BN when channels change), ReLU."""

    def __init__(self, in_channels: int, channels: int, dim: int = 3, bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = SparseConv(in_channels, channels, 3, dim=dim)
        self.norm1 = SparseBatchNorm(channels, momentum=bn_momentum)
        self.conv2 = SparseConv(channels, channels, 3, dim=dim)
        self.norm2 = SparseBatchNorm(channels, momentum=bn_momentum)
        self.relu = SparseReLU()
        self.downsample = _projection(in_channels, channels, dim, bn_momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + residual)


def make_stage(in_channels: int, channels: int, blocks: int, dim: int, bn_momentum: float = 0.1) -> nn.Sequential:
    """``blocks`` :class:`BasicBlock` s, ``in_channels`` → ``channels`` (the first block projects)."""
    return nn.Sequential(*[BasicBlock(in_channels if k == 0 else channels, channels, dim=dim, bn_momentum=bn_momentum)
                           for k in range(blocks)])
