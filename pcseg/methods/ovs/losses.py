"""Losses and the text-query classifier of 3D-OVS-style feature fields.

- :func:`photometric_loss`: mean squared colour error.
- :func:`multiscale_patch_features` + :func:`sample_feature_map` + :func:`distillation_loss`: the
  rendered feature of a pixel is pulled (cosine) towards the 2D encoder's feature map average-pooled
  over square patches of several sizes around that pixel (a cheap stand-in for encoding crops at
  several scales), averaged over scales.
- :func:`correlation_loss`: for a set of sampled pixels, the cosine-similarity matrix of rendered
  features should equal that of DINO features (mean squared difference of the two matrices).
- :func:`relevancy`: per-pixel cosine to each text query, softmax over queries with a temperature;
  the label is the most relevant query.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["photometric_loss", "multiscale_patch_features", "sample_feature_map", "distillation_loss",
           "correlation_loss", "relevancy"]


def photometric_loss(rgb: Tensor, target: Tensor) -> Tensor:
    """Mean squared error of colours (R, 3) in [0, 1]."""
    return F.mse_loss(rgb, target)


def multiscale_patch_features(feature_map: Tensor, scales: Sequence[int] = (1, 3, 5)) -> Tensor:
    """Average-pool a feature map (B, C, h, w) over ``k x k`` windows (odd k, same size, edges
    averaging only inside the map) for each scale ``k`` → (B, K, C, h, w)."""
    if any(k < 1 or k % 2 == 0 for k in scales):
        raise ValueError(f"multiscale_patch_features: scales must be odd positive integers, got {list(scales)}")
    pooled = [F.avg_pool2d(feature_map, k, stride=1, padding=k // 2, count_include_pad=False) for k in scales]
    return torch.stack(pooled, dim=1)


def sample_feature_map(feature_map: Tensor, uv: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Bilinearly read a (C, h, w) feature map covering an (H, W) image at pixel positions uv (R, 2)
    → (R, C). Pixel ``(u, v)`` (OpenCV, centre at integers) maps to the same relative position in the map."""
    height, width = image_size
    x = (uv[:, 0] + 0.5) / width * 2.0 - 1.0
    y = (uv[:, 1] + 0.5) / height * 2.0 - 1.0
    grid = torch.stack([x, y], dim=1).view(1, -1, 1, 2).to(feature_map.dtype)
    return F.grid_sample(feature_map[None], grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0, :, :, 0].T


def distillation_loss(rendered: Tensor, targets: Tensor) -> Tensor:
    """Mean over rays and scales of ``1 - cos(rendered, target)``: rendered (R, C), targets (R, K, C)."""
    return (1.0 - F.cosine_similarity(rendered[:, None, :], targets, dim=-1)).mean()


def correlation_loss(rendered: Tensor, reference: Tensor) -> Tensor:
    """Mean squared difference between the (R, R) cosine-similarity matrices of ``rendered`` (R, C)
    and ``reference`` (R, C') features of the same R pixels."""
    if len(rendered) != len(reference):
        raise ValueError(f"correlation_loss: {len(rendered)} rendered vs {len(reference)} reference rows")
    a, b = F.normalize(rendered, dim=1), F.normalize(reference, dim=1)
    return ((a @ a.T - b @ b.T) ** 2).mean()


def relevancy(features: Tensor, text: Tensor, temperature: float = 0.1) -> tuple[Tensor, Tensor]:
    """Classify features (..., C) by text query embeddings (Q, C).

    Returns:
        probabilities (..., Q) = softmax over queries of cosine / ``temperature``, and labels (...)
        int64 = index of the most similar query.
    """
    if features.shape[-1] != text.shape[-1]:
        raise ValueError(f"relevancy: features have {features.shape[-1]} channels, text {text.shape[-1]}")
    if temperature <= 0:
        raise ValueError(f"relevancy: temperature must be > 0, got {temperature}")
    cosine = F.normalize(features, dim=-1) @ F.normalize(text, dim=-1).T
    probs = torch.softmax(cosine / temperature, dim=-1)
    return probs, probs.argmax(dim=-1)
