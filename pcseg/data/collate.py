"""Batching training samples into one sparse batch (docs/contracts.md)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch

__all__ = ["collate_sparse", "sum_counts"]

_KEYS = ("coords", "feats", "labels", "inverse", "point_labels", "points", "name")


def collate_sparse(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate samples of :class:`pcseg.data.datasets.SegmentationDataset` into one batch.

    Returns ``coords`` (ΣM, 1+D) int32 with the sample index first, ``feats`` (ΣM, C),
    ``labels`` (ΣM,) int64, ``inverse`` (ΣN,) int64 offset into the batch's voxel rows,
    ``point_labels`` (ΣN,) int64, ``points`` (ΣN, 3) float32, ``point_batch`` (ΣN,) int64 sample
    index per point, ``names`` list[str], and ``load_report`` dict[str, int]: the samples'
    ``load_report`` counts summed (only when a sample has one).
    """
    if not samples:
        raise ValueError("collate_sparse: expected at least one sample, got an empty list")
    for i, s in enumerate(samples):
        missing = [k for k in _KEYS if k not in s]
        if missing:
            raise KeyError(f"collate_sparse: sample {i} ({s.get('name', '?')!r}) lacks {', '.join(missing)}")
        for key in ("coords", "feats"):
            if s[key].shape[1:] != samples[0][key].shape[1:]:
                raise ValueError(f"collate_sparse: sample {i} ({s['name']!r}) '{key}' has shape "
                                 f"{tuple(s[key].shape)}, expected (*, {samples[0][key].shape[1]}) like sample 0")
    coords, inverse, point_batch = [], [], []
    offset = 0
    for i, s in enumerate(samples):
        m, n = s["coords"].shape[0], s["inverse"].shape[0]
        batch_col = torch.full((m, 1), i, dtype=torch.int32)
        coords.append(torch.cat([batch_col, s["coords"].to(torch.int32)], dim=1))
        inverse.append(s["inverse"] + offset)
        point_batch.append(torch.full((n,), i, dtype=torch.int64))
        offset += m
    return {
        "coords": torch.cat(coords),
        "feats": torch.cat([s["feats"] for s in samples]),
        "labels": torch.cat([s["labels"] for s in samples]),
        "inverse": torch.cat(inverse),
        "point_labels": torch.cat([s["point_labels"] for s in samples]),
        "points": torch.cat([s["points"] for s in samples]),
        "point_batch": torch.cat(point_batch),
        "names": [s["name"] for s in samples],
        **({"load_report": sum_counts(s["load_report"] for s in samples if "load_report" in s)}
           if any("load_report" in s for s in samples) else {}),
    }


def sum_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Key-wise sum of count dicts (keys in first-seen order)."""
    total: dict[str, int] = {}
    for c in counts:
        for key, n in c.items():
            total[key] = total.get(key, 0) + int(n)
    return total
