"""Residual blocks on sparse tensors (the ResNet basic and bottleneck blocks, in any D)."""
from __future__ import annotations

from typing import Optional

from torch import nn

from pcseg.sparse import SparseBatchNorm, SparseConv, SparseReLU, SparseTensor

__all__ = ["BasicBlock", "Bottleneck", "conv_bn_relu", "make_stage"]


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

    expansion = 1

    def __init__(self, in_channels: int, channels: int, dilation: int = 1, dim: int = 3, bn_momentum: float = 0.1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = SparseConv(in_channels, channels, 3, dilation=dilation, dim=dim)
        self.norm1 = SparseBatchNorm(channels, momentum=bn_momentum)
        self.conv2 = SparseConv(channels, out_channels, 3, dilation=dilation, dim=dim)
        self.norm2 = SparseBatchNorm(out_channels, momentum=bn_momentum)
        self.relu = SparseReLU()
        self.downsample = _projection(in_channels, out_channels, dim, bn_momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 → 1×1 expand (×4), plus identity or projection, ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, dilation: int = 1, dim: int = 3, bn_momentum: float = 0.1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = SparseConv(in_channels, channels, 1, dim=dim)
        self.norm1 = SparseBatchNorm(channels, momentum=bn_momentum)
        self.conv2 = SparseConv(channels, channels, 3, dilation=dilation, dim=dim)
        self.norm2 = SparseBatchNorm(channels, momentum=bn_momentum)
        self.conv3 = SparseConv(channels, out_channels, 1, dim=dim)
        self.norm3 = SparseBatchNorm(out_channels, momentum=bn_momentum)
        self.relu = SparseReLU()
        self.downsample = _projection(in_channels, out_channels, dim, bn_momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return self.relu(out + residual)


def make_stage(block: type, in_channels: int, channels: int, blocks: int, dim: int,
               bn_momentum: float = 0.1) -> tuple[nn.Sequential, int]:
    """``blocks`` residual blocks; returns the stage and its output channels."""
    layers = []
    for _ in range(blocks):
        layers.append(block(in_channels, channels, dim=dim, bn_momentum=bn_momentum))
        in_channels = channels * block.expansion
    return nn.Sequential(*layers), in_channels
