"""HPAL's feature-distance suppression: drop candidates that duplicate an already chosen one.

Greedy over the candidates in descending score (ties: lower index first): a candidate is skipped
when some already *chosen* candidate lies within ``radius`` metres (Euclidean, ``<=``) **and** has
a cosine similarity ``> max_cosine`` between their backbone features; otherwise it is chosen.

To keep this local, candidates are bucketed into cubic cells of edge ``radius`` (packed int64
keys, one sort): two points within ``radius`` lie in the same or adjacent cells, so only the 27
neighbouring cells are searched (``searchsorted`` per offset). The conflicting pairs are built in
chunks of at most ``max_pairs`` pair tests; the greedy pass then only walks candidates that have a
conflicting higher-ranked candidate. Callers pass a pre-selected top-M of a scene (see
:mod:`pcseg.methods.hpal.selection`), so the Python loop of that pass stays short.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pcseg.sparse import pack_keys
from pcseg.sparse.coords import check_range, offset_keys

__all__ = ["RADIUS", "MAX_COSINE", "conflict_pairs", "suppress"]

RADIUS = 0.2        # metres (HPAL)
MAX_COSINE = 0.8    # feature cosine similarity above which a near candidate is redundant (HPAL)
_NEIGHBOURS = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.int64)  # (27, 3)


def conflict_pairs(points: Tensor, feats: Tensor, rank: Tensor, radius: float = RADIUS,
                   max_cosine: float = MAX_COSINE, max_pairs: int = 1 << 22) -> tuple[Tensor, Tensor]:
    """All (i, j) with ``rank[j] < rank[i]``, ``|p_i - p_j| <= radius`` and ``cos(f_i, f_j) > max_cosine``.

    points: (K, 3) float metres; feats: (K, F) float; rank: (K,) int64 permutation (0 = best).
    Returns two (P,) int64 tensors ``(i, j)``.
    """
    k = points.shape[0]
    cells = torch.floor(points.double() / radius).to(torch.int64)
    cells = torch.cat([torch.zeros(k, 1, dtype=torch.int64, device=points.device), cells], 1)
    check_range(cells, margin=1)                                                  # neighbour keys stay exact
    keys = pack_keys(cells, check=False)
    sorted_keys, by_key = torch.sort(keys)
    deltas = offset_keys(_NEIGHBOURS.to(points.device))                           # (27,)
    query = keys[:, None] + deltas[None, :]                                       # (K, 27)
    lo = torch.searchsorted(sorted_keys, query.reshape(-1), right=False).view(k, -1)
    hi = torch.searchsorted(sorted_keys, query.reshape(-1), right=True).view(k, -1)
    counts = (hi - lo).sum(1)                                                     # pair tests per candidate
    unit = F.normalize(feats.float(), dim=1)
    out_i, out_j = [], []
    for start, stop in _chunks(counts, max_pairs):
        rows = torch.arange(start, stop, device=points.device)
        lo_c, n_c = lo[rows].reshape(-1), (hi[rows] - lo[rows]).reshape(-1)
        owner = rows.repeat_interleave(_NEIGHBOURS.shape[0])
        i = owner.repeat_interleave(n_c)
        first = torch.cumsum(n_c, 0) - n_c
        pos = torch.arange(int(n_c.sum()), device=points.device) - first.repeat_interleave(n_c) + \
            lo_c.repeat_interleave(n_c)
        j = by_key[pos]
        keep = rank[j] < rank[i]
        i, j = i[keep], j[keep]
        near = (points[i].double() - points[j].double()).norm(dim=1) <= radius
        i, j = i[near], j[near]
        similar = (unit[i] * unit[j]).sum(1) > max_cosine
        out_i.append(i[similar])
        out_j.append(j[similar])
    empty = torch.zeros(0, dtype=torch.int64, device=points.device)
    return (torch.cat(out_i) if out_i else empty), (torch.cat(out_j) if out_j else empty)


def _chunks(counts: Tensor, max_pairs: int) -> list[tuple[int, int]]:
    """Consecutive row ranges whose ``counts`` sum to at most ``max_pairs`` (a single row may exceed it)."""
    bounds, start, total = [], 0, 0
    for row, c in enumerate(counts.tolist()):
        if total + c > max_pairs and row > start:
            bounds.append((start, row))
            start, total = row, 0
        total += c
    if start < len(counts):
        bounds.append((start, len(counts)))
    return bounds


def suppress(points: Tensor, feats: Tensor, scores: Tensor, radius: float = RADIUS,
             max_cosine: float = MAX_COSINE) -> Tensor:
    """Indices of the chosen candidates, in descending score order (see the module docstring).

    points: (K, 3) float metres; feats: (K, F) float backbone features; scores: (K,) float.
    Returns (J,) int64 indices into the K candidates, J <= K.
    """
    k = scores.shape[0]
    if points.shape != (k, 3) or feats.ndim != 2 or feats.shape[0] != k:
        raise ValueError(f"suppress: expected points (K, 3), feats (K, F), scores (K,) with one K, got "
                         f"{tuple(points.shape)}, {tuple(feats.shape)}, {tuple(scores.shape)}")
    order = torch.sort(scores, descending=True, stable=True).indices
    if k == 0:
        return order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k, device=order.device)
    i, j = conflict_pairs(points, feats, rank, radius, max_cosine)
    by_rank = torch.argsort(rank[i], stable=True)        # group each candidate's conflicts, in rank order
    i, j = i[by_rank].cpu().numpy(), j[by_rank].cpu().numpy()
    chosen = np.ones(k, dtype=bool)                       # candidates without conflicts are always chosen
    firsts = np.flatnonzero(np.r_[True, i[1:] != i[:-1]]) if len(i) else np.zeros(0, dtype=np.int64)
    for first, end in zip(firsts.tolist(), np.r_[firsts[1:], len(i)].tolist()):
        if chosen[j[first:end]].any():                    # higher-ranked conflicts are decided already
            chosen[i[first]] = False
    order_np = order.cpu().numpy()
    return torch.from_numpy(order_np[chosen[order_np]]).to(scores.device)
