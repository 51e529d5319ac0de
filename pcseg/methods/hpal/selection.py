"""One active-learning round: score → suppress → pick exactly ``count`` new points.

Budget rules (documented choices):

- Counts are **totals over all training scenes**: the round's ``count`` new points are ranked
  globally, so an uncertain scene receives more points than a confident one.
- Only *annotatable* points are candidates: not yet labelled and with a ground-truth label (points
  the dataset marks ``ignore_index`` cannot be annotated by the simulated oracle). With
  ``require_label=False`` every point not yet labelled is a candidate: a person labels scans that
  have no ground truth (``tools/annotate.py``).
- ``strategy``: ``"hpal"`` (hierarchical uncertainty + feature-distance suppression),
  ``"margin"`` (``1 - point margin``, no suppression) or ``"random"`` (uniform over the annotatable
  points of all scenes, from a seeded generator).
- Top-M: scene s keeps only its ``M_s = ceil(candidate_factor * count * n_s / n_total)`` best
  candidates (n = raw points), so suppression stays local and memory stays bounded. The chosen
  candidates of all scenes are merged by score (ties: scene order, then rank) and the first
  ``count`` taken: this is exactly the global greedy of HPAL unless one scene would need more than
  its M_s points. Should suppression leave fewer than ``count``, the best suppressed candidates fill
  the rest, so the count is always exact.

:func:`cumulative_targets` gives the labelled-point total after each round: round 0 (random) holds
``initial_fraction`` of the final budget, later rounds add equal shares up to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pcseg.data.collate import collate_sparse
from pcseg.data.formats import IGNORE_INDEX
from pcseg.engine.evaluator import to_device
from pcseg.engine.hooks import sparse_input

from .suppression import MAX_COSINE, RADIUS, suppress
from .uncertainty import GRIDS, WEIGHTS, hierarchical_uncertainty, margin

__all__ = ["STRATEGIES", "CANDIDATE_FACTOR", "SelectionSettings", "ScenePool", "cumulative_targets", "annotatable",
           "random_selection", "scene_pool", "merge_pools", "predict_scene", "predict_raw_scene", "model_selection"]

STRATEGIES = ("hpal", "margin", "random")
CANDIDATE_FACTOR = 10.0  # M = 10 x the round's count, shared among scenes by size


@dataclass(frozen=True)
class SelectionSettings:
    """The knobs of :func:`model_selection` (a config's ``active.selection``), HPAL's values by default.

    grids: cell edges (m) of the region levels; weights: one per level, the point level first
    (``len(grids) + 1``); radius (m) and max_cosine: the feature-distance suppression;
    candidate_factor: the per-scene top-M, in multiples of the round's count.
    """

    grids: tuple[float, ...] = GRIDS
    weights: tuple[float, ...] = WEIGHTS
    radius: float = RADIUS
    max_cosine: float = MAX_COSINE
    candidate_factor: float = CANDIDATE_FACTOR


def cumulative_targets(total_points: int, total_budget: float, rounds: int, initial_fraction: float = 0.2) -> list[int]:
    """Labelled points after rounds 0 … rounds-1: ``round(total_points * total_budget * f_k)``.

    f_0 = ``initial_fraction`` (whatever ``rounds`` is, so adding rounds later keeps round 0), then
    f_k = f_0 + (1 - f_0) * k / (rounds - 1), reaching the whole budget in the last round.
    """
    if not 0.0 < total_budget <= 1.0 or not 0.0 < initial_fraction <= 1.0 or rounds < 1:
        raise ValueError(f"cumulative_targets: expected total_budget and initial_fraction in (0, 1] and rounds >= 1, "
                         f"got {total_budget}, {initial_fraction}, {rounds}")
    final = total_points * total_budget
    fractions = [initial_fraction + (1.0 - initial_fraction) * k / max(rounds - 1, 1) for k in range(rounds)]
    targets = [int(round(final * f)) for f in fractions]
    if targets[0] < 1:
        raise ValueError(f"cumulative_targets: round 0 would label {final * initial_fraction:.2f} of {total_points} "
                         f"points (total_budget {total_budget}); raise the budget")
    return targets


def annotatable(segment: np.ndarray, labelled: np.ndarray, ignore_index: int = IGNORE_INDEX, *,
                require_label: bool = True) -> np.ndarray:
    """(N,) bool: points not in ``labelled`` ((K,) int64 indices) with a ground-truth label in ``segment`` (N,).

    require_label False: every point not in ``labelled`` (scans without ground truth, labelled by a person).
    """
    segment = np.asarray(segment)
    out = segment != ignore_index if require_label else np.ones(len(segment), dtype=bool)
    out[np.asarray(labelled, dtype=np.int64)] = False
    return out


def random_selection(available: Mapping[str, np.ndarray], count: int,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``count`` points drawn uniformly without replacement among the True entries of all scenes.

    available: scene → (N_s,) bool. Returns scene → (K_s,) int64 sorted indices, ΣK_s = count.
    """
    sizes = np.array([int(mask.sum()) for mask in available.values()], dtype=np.int64)
    if count > sizes.sum():
        raise ValueError(f"random_selection: {count} points requested, only {int(sizes.sum())} annotatable")
    flat = np.sort(rng.choice(int(sizes.sum()), size=count, replace=False))
    ends = np.cumsum(sizes)
    owner = np.searchsorted(ends, flat, side="right")
    return {scene: np.flatnonzero(mask)[flat[owner == k] - (ends[k] - sizes[k])].astype(np.int64)
            for k, (scene, mask) in enumerate(available.items())}


@dataclass(frozen=True)
class ScenePool:
    """One scene's ranked candidates: raw point indices (int64) and scores (float32), best first.

    chosen / chosen_scores: kept by suppression; spare / spare_scores: suppressed (used only to
    fill a round when too few are chosen).
    """

    scene: str
    chosen: np.ndarray
    chosen_scores: np.ndarray
    spare: np.ndarray
    spare_scores: np.ndarray


def scene_pool(scene: str, points: Tensor, probs: Tensor, voxel_feats: Tensor, inverse: Tensor, available: Tensor,
               num_candidates: int, strategy: str, radius: float = RADIUS, max_cosine: float = MAX_COSINE,
               grids: Sequence[float] = GRIDS, weights: Sequence[float] = WEIGHTS) -> ScenePool:
    """Score a scene's points, keep the best ``num_candidates`` available ones, suppress (``"hpal"``).

    points: (N, 3) float metres; probs: (N, C) float; voxel_feats: (M, F) backbone features of the
    voxels, inverse: (N,) int64 point → voxel (a point's feature is its voxel's); available: (N,) bool.
    """
    if strategy == "hpal":
        score = hierarchical_uncertainty(points, probs, grids, weights)
    elif strategy == "margin":
        score = 1.0 - margin(probs.float())
    else:
        raise ValueError(f"scene_pool: strategy expected 'hpal' or 'margin' (model-based), got {strategy!r}")
    idx = torch.nonzero(available).squeeze(1)
    order = torch.sort(score[idx], descending=True, stable=True).indices[:num_candidates]
    top, top_scores = idx[order], score[idx][order]
    kept = torch.arange(len(top), device=top.device)
    if strategy == "hpal":
        kept = suppress(points[top], voxel_feats[inverse[top]], top_scores, radius, max_cosine)
    spare = torch.ones(len(top), dtype=torch.bool, device=top.device)
    spare[kept] = False
    return ScenePool(scene, _numpy(top[kept], np.int64), _numpy(top_scores[kept], np.float32),
                     _numpy(top[spare], np.int64), _numpy(top_scores[spare], np.float32))


def _numpy(t: Tensor, dtype: type) -> np.ndarray:
    return t.cpu().numpy().astype(dtype)


def _best(pools: Sequence[ScenePool], spare: bool, count: int) -> list[np.ndarray]:
    """Per pool, its entries among the ``count`` best-scored chosen (or spare) candidates of all pools."""
    indices = [p.spare if spare else p.chosen for p in pools]
    scores = np.concatenate([np.zeros(0, np.float32)] + [p.spare_scores if spare else p.chosen_scores for p in pools])
    owner = np.repeat(np.arange(len(pools)), [len(i) for i in indices])
    best = np.argsort(-scores, kind="stable")[:count]
    rank_in_pool = best - np.r_[0, np.cumsum([len(i) for i in indices])][owner[best]]
    return [indices[k][rank_in_pool[owner[best] == k]] for k in range(len(pools))]


def merge_pools(pools: Sequence[ScenePool], count: int) -> dict[str, np.ndarray]:
    """The ``count`` best chosen candidates over all scenes (then the best spare ones if needed).

    Returns scene → (K_s,) int64 sorted indices with ΣK_s = count; raises if the pools hold fewer.
    """
    chosen = _best(pools, False, count)
    short = count - sum(len(c) for c in chosen)
    spare = _best(pools, True, short)
    if short > sum(len(s) for s in spare):
        raise ValueError(f"merge_pools: {count} points requested but the candidate pools hold only "
                         f"{count - short + sum(len(s) for s in spare)}; raise candidate_factor")
    return {p.scene: np.sort(np.concatenate([c, s])).astype(np.int64) for p, c, s in zip(pools, chosen, spare)}


@torch.no_grad()
def predict_scene(model: nn.Module, sample: Mapping[str, Any], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Run ``model`` (with ``forward_features`` / ``forward_head``) on one training sample.

    Returns point probabilities (N, C) float32, voxel features (M, F) float32 and the point → voxel
    inverse (N,) int64, all on ``device``.
    """
    batch = to_device(collate_sparse([sample]), device)
    features = model.forward_features(sparse_input(batch))
    probs = torch.softmax(model.forward_head(features).F.float(), dim=1)
    return probs[batch["inverse"]], features.F.float(), batch["inverse"]


def predict_raw_scene(model: nn.Module, dataset: Any, index: int, num_points: int,
                      device: torch.device) -> tuple[dict[str, Any], Tensor, Tensor, Tensor]:
    """``dataset[index]`` and :func:`predict_scene` on it; raises unless it holds all ``num_points`` raw points.

    Returns the sample, point probabilities (N, C), voxel features (M, F) and inverse (N,).
    """
    sample = dataset[index]
    n = len(sample["point_labels"])
    if n != num_points:
        raise ValueError(f"scene {dataset.reader.scenes[index]!r} has {n} points after the dataset's transforms, "
                         f"expected its {num_points} raw points (use transforms that keep every point)")
    return (sample, *predict_scene(model, sample, device))


def model_selection(model: nn.Module, dataset: Any, labelled: Mapping[str, np.ndarray], scene_points: Mapping[str, int],
                    count: int, strategy: str, device: torch.device, *, candidate_factor: float = CANDIDATE_FACTOR,
                    radius: float = RADIUS, max_cosine: float = MAX_COSINE, grids: Sequence[float] = GRIDS,
                    weights: Sequence[float] = WEIGHTS, require_label: bool = True,
                    predicted: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
    """``count`` new points over the scenes of ``dataset`` chosen by ``strategy`` (``"hpal"`` / ``"margin"``).

    dataset: a :class:`~pcseg.data.datasets.SegmentationDataset` without budget whose transforms keep
    every raw point in order (e.g. only ``NormalizeColor``); its samples' ``points`` are read as metres.
    labelled: scene → (K,) int64 already labelled raw indices (never chosen again).
    scene_points: scene → raw point count, for the per-scene top-M. require_label: see :func:`annotatable`.
    candidate_factor, radius, max_cosine, grids, weights: see :class:`SelectionSettings`.
    predicted: if given, filled with scene → (K_s,) int64 the model's class of each returned point (so
    a caller showing suggestions need not predict the scenes again).
    Returns scene → (K_s,) int64 sorted new indices, ΣK_s = count.
    """
    was_training = model.training
    model.eval()
    total = sum(scene_points.values())
    pools = []
    candidate_classes: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # scene → sorted candidates, their classes
    try:
        for i, scene in enumerate(dataset.reader.scenes):
            n = scene_points[scene]
            sample, probs, voxel_feats, inverse = predict_raw_scene(model, dataset, i, n, device)
            available = annotatable(sample["point_labels"].numpy(), labelled.get(scene, np.zeros(0, np.int64)),
                                    dataset.ignore_index, require_label=require_label)
            m = math.ceil(candidate_factor * count * n / total)
            pools.append(scene_pool(scene, sample["points"].to(device), probs, voxel_feats, inverse,
                                    torch.from_numpy(available).to(device), m, strategy, radius, max_cosine, grids,
                                    weights))
            if predicted is not None:
                candidates = np.sort(np.concatenate([pools[-1].chosen, pools[-1].spare]))
                classes = probs.argmax(dim=1)[torch.from_numpy(candidates).to(device)]
                candidate_classes[scene] = (candidates, _numpy(classes, np.int64))
    finally:
        model.train(was_training)
    picks = merge_pools(pools, count)
    if predicted is not None:
        for scene, chosen in picks.items():
            candidates, classes = candidate_classes[scene]
            predicted[scene] = classes[np.searchsorted(candidates, chosen)]
    return picks
