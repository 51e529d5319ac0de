"""Superpixel pooling: the mean feature of the points (3D) or pixels (2D) of each superpixel.

One ``index_add`` and one ``bincount`` over all rows of the batch; ids are batch-global (see
:func:`pcseg.data.lidar_camera.collate_lidar_camera`), so no loop over images or superpixels.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["superpixel_pool", "pool_image_features"]


def superpixel_pool(feats: Tensor, ids: Tensor, num_superpixels: int) -> tuple[Tensor, Tensor]:
    """Mean of the rows of ``feats`` per superpixel.

    feats: (P, C) float; ids: (P,) int64 superpixel of each row in ``[0, num_superpixels)``, or -1 for
    rows that belong to none (dropped). Returns ``means`` (S, C) float32 (zero where a superpixel has
    no row) and ``counts`` (S,) int64 rows per superpixel. Differentiable in ``feats``.
    """
    if feats.ndim != 2 or ids.shape != feats.shape[:1]:
        raise ValueError(f"superpixel_pool: expected feats (P, C) and ids (P,), got {tuple(feats.shape)} and "
                         f"{tuple(ids.shape)}")
    keep = ids >= 0
    rows, kept_ids = feats[keep].float(), ids[keep]
    if kept_ids.numel() and int(kept_ids.max()) >= num_superpixels:
        raise ValueError(f"superpixel_pool: ids expected < num_superpixels={num_superpixels}, "
                         f"got {int(kept_ids.max())}")
    sums = torch.zeros((num_superpixels, feats.shape[1]), dtype=torch.float32, device=feats.device)
    sums = sums.index_add(0, kept_ids, rows)
    counts = torch.bincount(kept_ids, minlength=num_superpixels)
    return sums / counts.clamp(min=1).unsqueeze(1), counts


def pool_image_features(maps: Tensor, superpixels: Tensor, num_superpixels: int) -> tuple[Tensor, Tensor]:
    """:func:`superpixel_pool` of feature maps ``maps`` (B, C, H, W) over ``superpixels`` (B, H, W) int64
    (-1 = no superpixel, e.g. padding). Returns ``means`` (S, C) float32 and ``counts`` (S,) int64 pixels."""
    if maps.ndim != 4 or superpixels.shape != (maps.shape[0], *maps.shape[2:]):
        raise ValueError(f"pool_image_features: expected maps (B, C, H, W) and superpixels (B, H, W), got "
                         f"{tuple(maps.shape)} and {tuple(superpixels.shape)}")
    flat = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
    return superpixel_pool(flat, superpixels.reshape(-1), num_superpixels)
