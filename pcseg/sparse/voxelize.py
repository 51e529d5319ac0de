"""Voxelization of points with the point→voxel inverse map."""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from .coords import check_range, pack_keys, sort_keys, tracing, unpack_keys

__all__ = ["Voxelized", "voxelize", "unique_coords", "unique_keys", "majority_vote", "voxel_sizes"]


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


def unique_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique values of (N,) int64 keys and the (N,) int64 inverse map.

    A sort, a flag where the value changes and a cumulative sum: plain ops that ``torch.export``
    traces (the output size is data-dependent) and that ONNX expresses (TopK, CumSum, NonZero).
    A traced graph asserts at least one key (a program runs on a non-empty scene).
    """
    sorted_keys, order = sort_keys(keys)
    # starts of runs; roll, not slices, so that a traced graph holds for any N >= 1
    starts = (sorted_keys != sorted_keys.roll(1)) | (torch.arange(keys.shape[0], device=keys.device) == 0)
    group = torch.cumsum(starts.to(torch.int64), 0) - 1
    inverse = torch.empty_like(group).scatter_(0, order, group)
    unique = sorted_keys[starts]
    if tracing():
        torch._check(unique.shape[0] >= 1, lambda: "a traced program needs at least one point")
        torch._check(unique.shape[0] <= keys.shape[0])
    return unique, inverse


def unique_coords(coords: Tensor, check: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Unique rows of integer coordinates.

    coords: (N, 1+D) integer, batch first. Returns ``(unique (M, 1+D) int32 sorted,
    inverse (N,) int64, first (M,) int64 index of the first occurrence of each unique row)``.
    check: range-check the coords (skip only when the caller has checked them).
    """
    keys = pack_keys(coords, check=check)
    ukeys, inverse = unique_keys(keys)
    n = keys.shape[0]
    first = torch.full((ukeys.shape[0],), n, dtype=torch.int64, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=keys.device), reduce="amin")
    return unpack_keys(ukeys, coords.shape[1] - 1), inverse, first


def voxel_sizes(voxel_size: float | Sequence[float] | Tensor, dim: int | None = None,
                field: str = "voxel_size") -> list[float]:
    """The voxel size as 1 or ``dim`` (any count when None) finite Python floats > 0.

    Validated before any cast; a bool or non-number is refused. Raises ValueError whose message
    names ``field``, with ``[i]`` for a bad axis: ``voxel_size[1]: expected a finite number > 0, got 0.0``.
    """
    if isinstance(voxel_size, Tensor):
        values = voxel_size.detach().to("cpu", torch.float64).reshape(-1).tolist()
        names = [field] if voxel_size.ndim == 0 else [f"{field}[{i}]" for i in range(len(values))]
    elif getattr(voxel_size, "ndim", None) == 0:                      # a 0-d array: one value
        values, names = [voxel_size.item()], [field]
    elif isinstance(voxel_size, (str, bytes)) or not isinstance(voxel_size, Iterable):
        values, names = [voxel_size], [field]
    else:
        values = list(voxel_size)
        names = [f"{field}[{i}]" for i in range(len(values))]
    if len(values) == 0 or (dim is not None and len(values) not in (1, dim)):
        count = "one per axis" if dim is None else f"{dim} (one per axis)"
        raise ValueError(f"{field}: expected a finite number > 0 or {count}, got {voxel_size!r}")
    for name, value in zip(names, values):
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a finite number > 0, got {value if number else repr(value)}")
    return [float(v) for v in values]


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

    The grid is computed in floating point (the points' dtype, float64 for integer points) and
    range-checked before it is cast to integers, so nothing wraps. Traceable by ``torch.export``
    when the voxel size is a Python number or sequence (the finiteness check becomes a graph
    assertion, majority-vote labels stay eager-only).
    """
    if points.ndim != 2:
        raise ValueError(f"points must be (N, D), got shape {tuple(points.shape)}")
    if reduce not in ("mean", "first"):
        raise ValueError(f"reduce must be 'mean' or 'first', got {reduce!r}")
    n = points.shape[0]
    for name, t in (("feats", feats), ("labels", labels), ("batch", batch)):
        if t is not None and t.shape[0] != n:
            raise ValueError(f"{name} has {t.shape[0]} rows, expected {n} (one per point)")
    compute = points.dtype if points.dtype.is_floating_point else torch.float64
    points = points.to(compute)
    finite = torch.isfinite(points).all()
    if tracing():
        torch._assert_async(finite, "points contain NaN or inf; drop them before voxelizing")
    elif not finite:
        raise ValueError("points contain NaN or inf; drop them before voxelizing")
    vs = torch.tensor(voxel_sizes(voxel_size, points.shape[1]), dtype=compute, device=points.device)
    bcol = batch.to(compute) if batch is not None else points.new_zeros(n)
    grid = torch.cat([bcol[:, None], torch.floor(points / vs)], dim=1)
    check_range(grid)                                               # before the cast to integers
    coords, inverse, first = unique_coords(grid.to(torch.int64), check=False)
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
            counts = torch.zeros(m, dtype=feats.dtype, device=feats.device).index_add_(0, inverse, feats.new_ones(n))
            out_feats = sums / counts[:, None]
    out_labels = majority_vote(labels, inverse, m, ignore_index) if labels is not None else None
    return Voxelized(coords, out_feats, out_labels, inverse, first)
