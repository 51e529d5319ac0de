"""3D-OVS end to end on a scene, shared by ``tools/ovs.py`` and ``benchmarks/ovs_lifting.py``.

A ``configs/ovs/*.yaml`` file is a common training config (:class:`pcseg.engine.config.Config`):
``data`` the scene (:mod:`.scene`) and ray batches, ``model: {name: RadianceField, …}``,
``method: {name: FeatureField, …}`` (losses, encoders, queries), ``train`` the optimiser and the
number of steps (``epochs * data.kwargs.steps_per_epoch``), ``eval.period: 0``.
:func:`fit_scene` encodes the fitted views and fits the field through the one trainer;
:func:`score_scene` labels the held-out views and the points by text relevancy and, where ground
truth exists, scores them beside the per-view 2D baseline.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

from torch import Tensor

from pcseg.engine.config import Config
from pcseg.methods.registry import build_method
from pcseg.utils.errors import InputError

from .evaluate import label_points, labels_from_feature_maps, miou, query_ious, render_labels, to_query_labels
from .features import build_text_encoder, encode_views
from .field import RadianceField
from .method import FeatureField, fit_field
from .scene import OVSScene

__all__ = ["FittedScene", "OVSScores", "build_ovs_method", "fit_scene", "scene_queries", "score_scene"]

HELD_OUT_SEED_OFFSET = 10_000
"""The synthetic stand-in encodes held-out views with ``seed + HELD_OUT_SEED_OFFSET`` (other noise)."""


@dataclass
class FittedScene:
    """A fitted ``field``, the ``method`` that holds the encoders and queries, and the fitted views'
    2D ``features`` (V, C, h, w)."""

    field: RadianceField
    method: FeatureField
    features: Tensor


@dataclass
class OVSScores:
    """Held-out ``rgb`` (V, H, W, 3) and ``labels`` (V, H, W) rendered from the field; ``gt`` (V, H, W)
    query labels or None; ``point_labels`` (N,) or None; ``metrics``: ``view_miou``, ``view_2d_miou``
    (0..1), ``view_iou``, ``view_2d_iou`` (per query) with ground-truth views, ``point_miou`` with
    labelled points."""

    rgb: Tensor
    labels: Tensor
    gt: Tensor | None
    point_labels: Tensor | None
    metrics: dict[str, object] = dataclass_field(default_factory=dict)


def build_ovs_method(cfg: Config) -> FeatureField:
    """``METHODS.build(cfg.method)``, which must be a :class:`FeatureField`."""
    method = build_method(cfg.method)
    if not isinstance(method, FeatureField):
        raise InputError(f"method.name: expected 'FeatureField' for 3D-OVS, got {cfg.method.get('name')!r}")
    return method


def fit_scene(cfg: Config, scene: OVSScene, work_dir: str | Path, resume: bool = False) -> FittedScene:
    """Encode ``scene.train`` with the configured encoders and fit a field to it in ``work_dir``."""
    method = build_ovs_method(cfg)
    features, dino = encode_views(scene.train, scene.class_names, method.image_encoder, method.text_encoder, cfg.seed,
                                  method.dino_encoder)
    return FittedScene(fit_field(cfg, scene, method, features, dino, work_dir, resume), method, features)


def scene_queries(method: FeatureField, scene: OVSScene, queries: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``queries``, else the method's, else the scene's class names; InputError if any is empty."""
    chosen = tuple(queries or method.queries or scene.class_names)
    if not chosen or any(not q.strip() for q in chosen):
        raise InputError(f"method.queries: expected non-empty names, got {list(chosen)}")
    return chosen


def score_scene(fitted: FittedScene, scene: OVSScene, queries: tuple[str, ...], seed: int) -> OVSScores:
    """Label the held-out views and the points by ``queries``; score them where ground truth exists
    (the 2D baseline encodes the held-out views with ``seed + HELD_OUT_SEED_OFFSET``)."""
    method = fitted.method
    text = build_text_encoder(method.text_encoder)(list(queries))
    rgb, labels = render_labels(fitted.field, scene.held_out, text, scene.near_far, method.num_samples,
                                method.temperature, method.background)
    scores = OVSScores(rgb, labels, None, None)
    if scene.held_out.labels is not None:
        scores.gt = gt = to_query_labels(scene.held_out.labels, scene.class_names, queries, method.query_classes)
        held, _ = encode_views(scene.held_out, scene.class_names, method.image_encoder, method.text_encoder,
                               seed + HELD_OUT_SEED_OFFSET)
        labels_2d = labels_from_feature_maps(held, text, *labels.shape[1:], method.temperature)
        scores.metrics.update({"view_miou": miou(labels, gt, len(queries)),
                               "view_2d_miou": miou(labels_2d, gt, len(queries)),
                               "view_iou": query_ious(labels, gt, queries),
                               "view_2d_iou": query_ious(labels_2d, gt, queries)})
    if scene.points is not None:
        scores.point_labels = label_points(fitted.field, scene.points, text, method.temperature)
        if scene.point_classes is not None:
            point_gt = to_query_labels(scene.point_classes, scene.class_names, queries, method.query_classes)
            scores.metrics["point_miou"] = miou(scores.point_labels, point_gt, len(queries))
    return scores
