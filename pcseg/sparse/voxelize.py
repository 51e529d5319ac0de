"""Voxelization of points with the point→voxel inverse map."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .coords import pack_keys

__all__ = ["Voxelized", "voxelize", "unique_coords", "majority_vote"]


class Voxelized(NamedTuple):
    """Result of :func:`voxelize` (M voxels from N points).

    coords: (M, D) int32 voxel coordinates ``floor(points / voxel_size)``, sorted lexicographically.
    feats: (M, C) reduced point features, or None.
    labels: (M,) int64 majority-vote labels, or None.
    inverse: (N,) int64, ``coords[inverse[i]]`` is the voxel of point i.
    unique_index: (M,) int64, index of one point inside each voxel (the first in input order).
    """

    coords: Tensor
    feats: Optional[Tensor]
    labels: Optional[Tensor]
    inverse: Tensor
    unique_index: Tensor


def unique_coords(coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unique rows of integer coordinates.

    coords: (N, 1+D) integer, batch first. Returns ``(unique (M, 1+D) int32 sorted,
    inverse (N,) int64, first (M,) int64 index of the first occurrence of each unique row)``.
    """
    keys = pack_keys(coords)
    ukeys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    n = keys.shape[0]
    first = torch.full((ukeys.shape[0],), n, dtype=torch.int64, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=keys.device), reduce="amin")
    return coords[first].to(torch.int32), inverse, first


def majority_vote(labels: Tensor, inverse: Tensor, num_groups: int, ignore_index: int = -100) -> Tensor:
    """Most frequent label per group; ``ignore_index`` wins only when a group has nothing else.

    labels: (N,) int64; inverse: (N,) int64 group of each element in [0, num_groups).
    Ties go to the smallest label id. Returns (num_groups,) int64.
    """
    out = torch.full((num_groups,), ignore_index, dtype=torch.int64, device=labels.device)
    valid = labels != ignore_index
    if not bool(valid.any()):
        return out
    lab = labels[valid].to(torch.int64)
    grp = inverse[valid]
    if int(lab.min()) < 0:
        raise ValueError(f"labels must be >= 0 or ignore_index={ignore_index}, got {int(lab.min())}")
    num_labels = int(lab.max()) + 1
    counts = torch.bincount(grp * num_labels + lab, minlength=num_groups * num_labels)
    counts = counts.view(num_groups, num_labels)
    best = counts.argmax(dim=1)  # first maximum → smallest id on ties
    has_label = counts.sum(dim=1) > 0
    out[has_label] = best[has_label]
    return out


def voxelize(points: Tensor, voxel_size: float | Tensor, feats: Optional[Tensor] = None,
             labels: Optional[Tensor] = None, ignore_index: int = -100, reduce: str = "mean",
             batch: Optional[Tensor] = None) -> Voxelized:
    """Quantize points to a voxel grid.

    points: (N, D) float, metres (or pixels for D=2). voxel_size: scalar or (D,) per-axis size.
    feats: (N, C) float or None. labels: (N,) int64 or None.
    reduce: ``"mean"`` (average features of the points in a voxel) or ``"first"`` (features of
    the first point in input order). batch: optional (N,) int64 scene index; when given, voxels of
    different scenes never merge and the returned coords are (M, 1+D) with the batch index first.
    """
    if points.ndim != 2:
        raise ValueError(f"points must be (N, D), got shape {tuple(points.shape)}")
    if not torch.isfinite(points).all():
        raise ValueError("points contain NaN or inf; drop them before voxelizing")
    if reduce not in ("mean", "first"):
        raise ValueError(f"reduce must be 'mean' or 'first', got {reduce!r}")
    n = points.shape[0]
    for name, t in (("feats", feats), ("labels", labels), ("batch", batch)):
        if t is not None and t.shape[0] != n:
            raise ValueError(f"{name} has {t.shape[0]} rows, expected {n} (one per point)")
    vs = torch.as_tensor(voxel_size, dtype=points.dtype, device=points.device)
    if bool((vs <= 0).any()):
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    grid = torch.floor(points / vs).to(torch.int64)
    bcol = batch.to(torch.int64) if batch is not None else torch.zeros(n, dtype=torch.int64, device=points.device)
    coords, inverse, first = unique_coords(torch.cat([bcol[:, None], grid], dim=1))
    m = coords.shape[0]
    if batch is None:
        coords = coords[:, 1:].contiguous()

    out_feats = None
    if feats is not None:
        if reduce == "first":
            out_feats = feats[first]
        else:
            sums = torch.zeros((m, feats.shape[1]), dtype=feats.dtype, device=feats.device)
            sums.index_add_(0, inverse, feats)
            counts = torch.bincount(inverse, minlength=m).to(feats.dtype)
            out_feats = sums / counts[:, None]
    out_labels = majority_vote(labels, inverse, m, ignore_index) if labels is not None else None
    return Voxelized(coords, out_feats, out_labels, inverse, first)
