"""The encoder interfaces of 3D-OVS and friends; implementations are in the sibling modules.

- :class:`ImageEncoder`: ``images (B, 3, H, W) float32 in [0, 1] → feature maps (B, C, h, w)``.
- :class:`TextEncoder`: ``list[str] → (Q, C) float32, L2-normalised rows``.

Every implementation loads from local files only (nothing downloads) and is registered in
:data:`pcseg.models.ENCODERS` under its name, so a config picks it: ``{name: HashTextEncoder, dim: 64}``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

__all__ = ["ImageEncoder", "TextEncoder", "CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD"]

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageEncoder(ABC):
    """``encoder(images)``: (B, 3, H, W) float32 RGB in [0, 1] → (B, out_channels, h, w) features."""

    out_channels: int

    @abstractmethod
    def __call__(self, images: Tensor) -> Tensor: ...


class TextEncoder(ABC):
    """``encoder(texts)``: list of Q strings → (Q, out_channels) float32 L2-normalised embeddings."""

    out_channels: int

    @abstractmethod
    def __call__(self, texts: list[str]) -> Tensor: ...
