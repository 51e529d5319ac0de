"""InfoNCE losses of SLidR's distillation and of its label-free 2D teacher.

- :func:`info_nce`: InfoNCE between matching rows of two feature sets, the other rows as negatives.
  SLidR (rows: superpixels), PPKT (rows: point-pixel pairs) and the contrastive teacher
  (:mod:`.ssl_teacher`, rows: image locations seen in two views) all reduce to it.
- :func:`point_info_nce`: the PPKT-style point-level loss (SLidR's ablation without superpixels):
  each sampled point's 3D feature against the 2D feature of the pixel it projects to.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["info_nce", "point_info_nce"]


def info_nce(anchors: Tensor, positives: Tensor, temperature: float = 0.07) -> Tensor:
    """InfoNCE between matching rows of ``anchors`` and ``positives``.

    anchors, positives: (K, D) float, row k of each describing the same thing (a superpixel, a
    point-pixel pair, an image location). Both are L2-normalised; with ``s_ij = <a_i, p_j> / temperature``
    the loss is ``mean_i [-log(exp(s_ii) / sum_j exp(s_ij))]``: anchor i must pick out its own
    positive among the K rows. K = 0 gives a zero that still depends on both inputs.
    """
    if anchors.shape != positives.shape or anchors.ndim != 2:
        raise ValueError(f"info_nce: expected two (K, D) tensors of equal shape, got "
                         f"{tuple(anchors.shape)} and {tuple(positives.shape)}")
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature expected > 0, got {temperature}")
    if anchors.shape[0] == 0:
        return (anchors.sum() + positives.sum()) * 0.0
    logits = F.normalize(anchors.float(), dim=1) @ F.normalize(positives.float(), dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def point_info_nce(points: Tensor, pixel_maps: Tensor, image_index: Tensor, pixel: Tensor,
                   temperature: float = 0.07, num_matches: Optional[int] = None,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """PPKT-style point-to-pixel InfoNCE: :func:`info_nce` over sampled point-pixel pairs.

    points: (N, D) float per-point 3D features; pixel_maps: (B, D, H, W) float 2D feature maps at
    image resolution; image_index: (N,) int64 image of each point in ``[0, B)``; pixel: (N, 2) int64
    (column, row) of each point's pixel, -1 where the point is outside its image (such points are
    left out). num_matches: use at most this many pairs, drawn uniformly without replacement with
    the CPU ``generator`` (None: torch's global one; SLidR's PPKT: 4096 pairs); None: every pair.
    The negatives of a pair are the other sampled pairs of the batch.
    """
    if points.ndim != 2 or pixel_maps.ndim != 4 or points.shape[1] != pixel_maps.shape[1]:
        raise ValueError(f"point_info_nce: expected points (N, D) and pixel_maps (B, D, H, W), got "
                         f"{tuple(points.shape)} and {tuple(pixel_maps.shape)}")
    if image_index.shape != points.shape[:1] or pixel.shape != (len(points), 2):
        raise ValueError(f"point_info_nce: expected image_index ({len(points)},) and pixel ({len(points)}, 2), "
                         f"got {tuple(image_index.shape)} and {tuple(pixel.shape)}")
    if num_matches is not None and num_matches < 1:
        raise ValueError(f"point_info_nce: num_matches expected >= 1 or None, got {num_matches}")
    rows = torch.nonzero(pixel[:, 0] >= 0, as_tuple=True)[0]
    if num_matches is not None and len(rows) > num_matches:
        rows = rows[torch.randperm(len(rows), generator=generator)[:num_matches].to(rows.device)]
    pixels = pixel_maps[image_index[rows], :, pixel[rows, 1], pixel[rows, 0]]
    return info_nce(points[rows], pixels, temperature)
