"""HPAL's hierarchical minimum-margin uncertainty of every point of a scene.

For class probabilities p (one row per point) the *margin* is ``p_top1 - p_top2`` in [0, 1]: small
when the two most likely classes are close, i.e. when the model is uncertain. The uncertainty of a
level is ``s = 1 - margin`` (higher = more uncertain), so the most uncertain points sort first.

Levels: level 0 is the point itself; level l >= 1 is the cell of a regular grid of edge
``grids[l-1]`` metres (default 0.1 / 0.5 / 1.0 m) containing the point, whose class distribution
is the mean of the per-point probabilities inside the cell. A cell's margin is broadcast back to
its points. The score is ``sum_l weights[l] * s_l`` (default ``s0 + 0.1 s1 + 0.01 s2 + 0.001 s3``):
the point level decides, coarser levels break ties towards uncertain neighbourhoods.

Cells are grouped with :func:`pcseg.sparse.voxelize` (sort-based keys, ``index_add_`` means): no
Python loop over cells.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from pcseg.sparse import voxelize

__all__ = ["GRIDS", "WEIGHTS", "margin", "region_margin", "hierarchical_uncertainty"]

GRIDS: tuple[float, ...] = (0.1, 0.5, 1.0)                # cell edges of levels 1..3 in metres (HPAL)
WEIGHTS: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)      # weights of levels 0..3 (HPAL)


def margin(probs: Tensor) -> Tensor:
    """``p_top1 - p_top2`` per row: (N,) of the same float dtype as ``probs`` (N, C), C >= 2."""
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"margin: expected (N, C) probabilities with C >= 2, got shape {tuple(probs.shape)}")
    top2 = torch.topk(probs, 2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def region_margin(points: Tensor, probs: Tensor, cell: float) -> Tensor:
    """Margin of the mean class distribution of each grid cell, broadcast to its points.

    points: (N, 3) float metres; probs: (N, C) float per-point probabilities; cell: edge in metres.
    Cells are ``floor(points / cell)``. Returns (N,) float (dtype of ``probs``).
    """
    if points.ndim != 2 or points.shape[0] != probs.shape[0]:
        raise ValueError(f"region_margin: expected points (N, D) and probs (N, C) with the same N, got "
                         f"{tuple(points.shape)} and {tuple(probs.shape)}")
    cells = voxelize(points, cell, feats=probs, reduce="mean")
    return margin(cells.feats)[cells.inverse]


def hierarchical_uncertainty(points: Tensor, probs: Tensor, grids: Sequence[float] = GRIDS,
                             weights: Sequence[float] = WEIGHTS) -> Tensor:
    """HPAL score ``weights[0] (1 - m_point) + sum_l weights[l] (1 - m_cell(grids[l-1]))``, higher = pick first.

    points: (N, 3) float metres; probs: (N, C) float; ``len(weights) == len(grids) + 1``.
    Returns (N,) float32 scores in ``[0, sum(weights)]``.
    """
    if len(weights) != len(grids) + 1:
        raise ValueError(f"hierarchical_uncertainty: expected len(weights) == len(grids) + 1 (point level "
                         f"first), got {len(weights)} weights for {len(grids)} grids")
    probs = probs.float()
    score = weights[0] * (1.0 - margin(probs))
    for weight, cell in zip(weights[1:], grids):
        score = score + weight * (1.0 - region_margin(points.float(), probs, cell))
    return score
