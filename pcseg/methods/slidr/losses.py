"""SLidR's superpixel-level InfoNCE loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["superpixel_info_nce"]


def superpixel_info_nce(points: Tensor, pixels: Tensor, temperature: float = 0.07) -> Tensor:
    """InfoNCE between matching rows of pooled 3D and 2D superpixel features.

    points, pixels: (K, D) float, row k of each pooled over superpixel k. Both are L2-normalised;
    with ``s_ij = <p_i, q_j> / temperature`` the loss is ``mean_i [-log(exp(s_ii) / sum_j exp(s_ij))]``:
    superpixel i's 3D feature must pick out its own 2D feature among the K superpixels of the batch.
    K = 0 gives a zero that still depends on both inputs.
    """
    if points.shape != pixels.shape or points.ndim != 2:
        raise ValueError(f"superpixel_info_nce: expected two (K, D) tensors of equal shape, got "
                         f"{tuple(points.shape)} and {tuple(pixels.shape)}")
    if temperature <= 0:
        raise ValueError(f"superpixel_info_nce: temperature expected > 0, got {temperature}")
    if points.shape[0] == 0:
        return (points.sum() + pixels.sum()) * 0.0
    logits = F.normalize(points.float(), dim=1) @ F.normalize(pixels.float(), dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))
