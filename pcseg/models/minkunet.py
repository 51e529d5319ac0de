"""The MinkUNet family: a residual sparse U-Net with four stride-2 levels.

Encoder: stem conv (kernel 5 for MinkUNet, 3 for Res16UNet) at stride 1, then four levels of
(kernel-2 stride-2 conv → residual stage). Decoder: four levels of (kernel-2 stride-2 transposed
conv → concatenate the encoder skip at that stride → residual stage). Head: a per-site linear
classifier. ``planes`` are the 8 stage widths (4 encoder, 4 decoder) and ``layers`` the 8 block
counts, as in the MinkowskiEngine / SpatioTemporalSegmentation model zoo:

=========  ===============================  ==========================
variant    layers                           planes
=========  ===============================  ==========================
14         1,1,1,1,1,1,1,1                  A: 32,64,128,256,128,128,96,96
18         2,2,2,2,2,2,2,2                  C: 32,64,128,256,256,128,96,96
34         2,3,4,6,2,2,2,2
=========  ===============================  ==========================
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from pcseg.sparse import (SparseBatchNorm, SparseConvTranspose, SparseFeatureMap, SparseReLU,
                          SparseTensor, sparse_cat)

from .blocks import conv_bn_relu, make_stage
from .registry import MODELS

__all__ = ["MinkUNet", "MinkUNet14A", "MinkUNet18A", "MinkUNet34A", "MinkUNet34C", "PLANES", "LAYERS"]

PLANES = {
    "A": (32, 64, 128, 256, 128, 128, 96, 96),
    "C": (32, 64, 128, 256, 256, 128, 96, 96),
}
LAYERS = {14: (1,) * 8, 18: (2,) * 8, 34: (2, 3, 4, 6, 2, 2, 2, 2)}


class MinkUNet(nn.Module):
    """Residual sparse U-Net.

    in_channels: input feature channels C_in. num_classes: logits per site. D: spatial dimension.
    planes, layers: 8 stage widths and block counts. stem_kernel: kernel size of the first conv.
    Input: SparseTensor (N, C_in) at stride 1. Output: SparseTensor (N, num_classes) on the same sites.
    ``forward_features`` gives the (N, planes[7]) features before the classifier.
    """

    def __init__(self, in_channels: int, num_classes: int, D: int = 3, planes: Sequence[int] = PLANES["C"],
                 layers: Sequence[int] = LAYERS[34], stem_kernel: int = 5, init_dim: int = 32,
                 bn_momentum: float = 0.1):
        super().__init__()
        if len(planes) != 8 or len(layers) != 8:
            raise ValueError(f"planes and layers need 8 entries each, got {len(planes)} and {len(layers)}")
        self.D, self.in_channels, self.num_classes = D, in_channels, num_classes
        self.stem = conv_bn_relu(in_channels, init_dim, stem_kernel, 1, D, bn_momentum)
        channels = init_dim
        skip_channels = [init_dim]
        self.down, self.enc = nn.ModuleList(), nn.ModuleList()
        for level in range(4):
            self.down.append(conv_bn_relu(channels, channels, 2, 2, D, bn_momentum))
            self.enc.append(make_stage(channels, planes[level], layers[level], D, bn_momentum))
            channels = planes[level]
            skip_channels.append(channels)
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        for level in range(4):
            width = planes[4 + level]
            self.up.append(nn.Sequential(SparseConvTranspose(channels, width, 2, stride=2, dim=D),
                                         SparseBatchNorm(width, momentum=bn_momentum), SparseReLU()))
            skip = skip_channels[3 - level]
            self.dec.append(make_stage(width + skip, width, layers[4 + level], D, bn_momentum))
            channels = width
        self.feature_channels = channels
        self.head = SparseFeatureMap(nn.Linear(channels, num_classes))

    def forward_features(self, x: SparseTensor) -> SparseTensor:
        """(N, C_in) at stride 1 → (N, feature_channels) decoder features on the same sites."""
        if x.stride != (1,) * self.D:
            raise ValueError(f"{type(self).__name__} expects input at stride 1, got {x.stride}")
        out = self.stem(x)
        skips = [out]
        for down, enc in zip(self.down, self.enc):
            out = enc(down(out))
            skips.append(out)
        skips.pop()  # the deepest level feeds the decoder directly
        for up, dec in zip(self.up, self.dec):
            out = dec(sparse_cat(up(out), skips.pop()))
        return out

    def forward_head(self, features: SparseTensor) -> SparseTensor:
        """(N, feature_channels) → (N, num_classes) logits."""
        return self.head(features)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.forward_head(self.forward_features(x))


@MODELS.register
def MinkUNet14A(in_channels: int, num_classes: int, D: int = 3, bn_momentum: float = 0.1) -> MinkUNet:
    """MinkUNet, layers 14, planes A, stem kernel 5."""
    return MinkUNet(in_channels, num_classes, D, PLANES["A"], LAYERS[14], 5, bn_momentum=bn_momentum)


@MODELS.register
def MinkUNet18A(in_channels: int, num_classes: int, D: int = 3, bn_momentum: float = 0.1) -> MinkUNet:
    """MinkUNet, layers 18, planes A, stem kernel 5."""
    return MinkUNet(in_channels, num_classes, D, PLANES["A"], LAYERS[18], 5, bn_momentum=bn_momentum)


@MODELS.register
def MinkUNet34A(in_channels: int, num_classes: int, D: int = 3, bn_momentum: float = 0.1) -> MinkUNet:
    """MinkUNet, layers 34, planes A, stem kernel 5."""
    return MinkUNet(in_channels, num_classes, D, PLANES["A"], LAYERS[34], 5, bn_momentum=bn_momentum)


@MODELS.register
def MinkUNet34C(in_channels: int, num_classes: int, D: int = 3, bn_momentum: float = 0.1) -> MinkUNet:
    """MinkUNet, layers 34, planes C, stem kernel 5."""
    return MinkUNet(in_channels, num_classes, D, PLANES["C"], LAYERS[34], 5, bn_momentum=bn_momentum)
