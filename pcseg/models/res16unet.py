"""Res16UNet (SpatioTemporalSegmentation's name for the MinkUNet layout with a 3×3×3 stem).

Res16UNet34C is the backbone of CPCM and HPAL: layers 2,3,4,6,2,2,2,2, planes
32,64,128,256,256,128,96,96, about 37.8 M parameters with 3 inputs and 20 classes.
"""
from __future__ import annotations

from .minkunet import LAYERS, PLANES, MinkUNet
from .registry import MODELS

__all__ = ["Res16UNet14A", "Res16UNet34C"]


@MODELS.register
def Res16UNet14A(in_channels: int, num_classes: int, D: int = 3, bn_momentum: float = 0.1) -> MinkUNet:
    """Res16UNet, layers 14, planes A, stem kernel 3 (a small model for quick experiments)."""
    return MinkUNet(in_channels, num_classes, D, PLANES["A"], LAYERS[14], stem_kernel=3, bn_momentum=bn_momentum)


@MODELS.register
def Res16UNet34C(in_channels: int, num_classes: int, D: int = 3, bn_momentum: float = 0.1) -> MinkUNet:
    """Res16UNet, layers 34, planes C, stem kernel 3."""
    return MinkUNet(in_channels, num_classes, D, PLANES["C"], LAYERS[34], stem_kernel=3, bn_momentum=bn_momentum)
