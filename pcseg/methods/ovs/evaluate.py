"""Scoring 3D-OVS: text-query labels of views and points, from the field or from unlifted 2D features.

Lifted: :func:`render_labels` (held-out views rendered from the field), :func:`label_points`
(the field's feature at each point) and :func:`point_features_from_renders` (the field rendered
from the fitted views, back-projected to the points exactly as the 2D baseline is). Per-view 2D
baselines: :func:`labels_from_feature_maps` (a view's own feature maps, upsampled) and
:func:`point_features_from_views` (a point's 2D features averaged over the views that see it). All
use :func:`~pcseg.methods.ovs.losses.relevancy`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pcseg.data.formats import IGNORE_INDEX
from pcseg.data.formats.posed_views import PosedViews
from pcseg.data.projection import pixel_index, project
from pcseg.engine.metrics import SegmentationMetrics, compute_metrics, confusion_matrix
from pcseg.utils.errors import InputError

from .field import RadianceField
from .losses import relevancy
from .method import render_view

__all__ = ["to_query_labels", "labels_from_feature_maps", "render_labels", "label_points",
           "point_features_from_views", "point_features_from_renders", "miou", "query_ious"]


def to_query_labels(labels: Tensor, class_names: tuple[str, ...], queries: tuple[str, ...],
                    query_classes: tuple[tuple[str, str], ...] = ()) -> Tensor:
    """Ground-truth class ids (any shape) → query indices; classes not queried become ``IGNORE_INDEX``.

    A query stands for the class of the same name, or for the class ``query_classes`` pairs it
    with (``("couch", "sofa")``); pairs of queries not asked are ignored. When two queries stand
    for one class, the first wins. Raises InputError for a pair naming an unknown class."""
    aliases = dict(query_classes)
    unknown = [c for q, c in query_classes if q in queries and c not in class_names]
    if unknown:
        raise InputError(f"method.query_classes: {unknown[0]!r} is no class of the scene; known: "
                         f"{', '.join(class_names)}")
    targets = [aliases.get(q, q) for q in queries]
    mapping = torch.tensor([targets.index(c) if c in targets else IGNORE_INDEX for c in class_names] + [IGNORE_INDEX],
                           dtype=torch.long)
    return mapping[torch.where(labels >= 0, labels, torch.full_like(labels, len(class_names)))]


def labels_from_feature_maps(features: Tensor, text: Tensor, height: int, width: int, temperature: float) -> Tensor:
    """Per-view 2D baseline: feature maps (V, C, h, w) upsampled to (H, W) → labels (V, H, W) int64."""
    up = F.interpolate(features, size=(height, width), mode="bilinear", align_corners=False)
    return relevancy(up.permute(0, 2, 3, 1), text, temperature)[1]


def render_labels(field: RadianceField, views: PosedViews, text: Tensor, near_far: tuple[float, float],
                  num_samples: int, temperature: float, background: float = 1.0) -> tuple[Tensor, Tensor]:
    """Rendered RGB (V, H, W, 3) float32 and relevancy labels (V, H, W) int64 of the views."""
    height, width = views.images.shape[1:3]
    rgb, labels = [], []
    for K, c2w in zip(views.K, views.c2w):
        out = render_view(field, K, c2w, height, width, near_far, num_samples, background)
        rgb.append(out["rgb"])
        labels.append(relevancy(out["feature"], text, temperature)[1])
    return torch.stack(rgb), torch.stack(labels)


@torch.no_grad()
def label_points(field: RadianceField, points: Tensor, text: Tensor, temperature: float, chunk: int = 65536) -> Tensor:
    """(N,) int64 labels of points (N, 3) from the field's feature at each point."""
    device = field.aabb.device
    feats = torch.cat([field(points[i:i + chunk].to(device))["feature"].float().cpu()
                       for i in range(0, len(points), chunk)])
    return relevancy(feats, text, temperature)[1]


def point_features_from_views(points: Tensor, views: PosedViews, features: Tensor,
                              depth_tolerance: float = 0.05) -> tuple[Tensor, Tensor]:
    """Per-view 2D baseline for points: the mean of the 2D features (V, C, h, w) of the views in
    which each point (N, 3) is visible (its pixel, :func:`~pcseg.data.projection.pixel_index`,
    inside the image and, when ``views.depth`` is known, within ``depth_tolerance`` m of that
    pixel's z-buffer) → (N, C), zero for points no view sees; and the number of views seeing each
    point (N,) int64. Features are sampled bilinearly at the point's continuous position."""
    height, width = views.images.shape[1:3]
    total, count = torch.zeros(len(points), features.shape[1]), torch.zeros(len(points), 1)
    for v in range(len(views.names)):
        uv, z = project(points, views.K[v], views.c2w[v])
        px = pixel_index(uv)
        seen = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < width) & (px[:, 1] >= 0) & (px[:, 1] < height)
        if views.depth is not None:
            zbuf = views.depth[v][px[:, 1].clamp(0, height - 1), px[:, 0].clamp(0, width - 1)]
            seen &= (z - zbuf).abs() <= depth_tolerance
        grid = torch.stack([(uv[:, 0] + 0.5) / width * 2 - 1, (uv[:, 1] + 0.5) / height * 2 - 1], 1)
        sampled = F.grid_sample(features[v:v + 1], grid.view(1, -1, 1, 2), align_corners=False)[0, :, :, 0].T
        total += sampled * seen[:, None]
        count += seen[:, None]
    return total / count.clamp(min=1), count[:, 0].long()


def point_features_from_renders(field: RadianceField, points: Tensor, views: PosedViews,
                                near_far: tuple[float, float], num_samples: int,
                                depth_tolerance: float = 0.05) -> tuple[Tensor, Tensor]:
    """Lifted features for points by rendering: the field's features rendered from every view of
    ``views`` (:func:`~pcseg.methods.ovs.method.render_view`, ``num_samples`` bin centres in
    ``near_far``: (V, H, W, D)), then :func:`point_features_from_views` of those maps, so that the
    visibility test, the bilinear reading and the averaging are the 2D baseline's.

    A surface point's own feature in the field (:func:`label_points`) is only constrained through
    the rendering weights where the fitted density puts them; the rendered feature is the quantity
    the distillation fitted. Args: ``points`` (N, 3) float32 world coordinates. Returns (N, D)
    float32 (zero for points no view sees) and the number of views seeing each point (N,) int64.
    """
    height, width = views.images.shape[1:3]
    maps = torch.stack([render_view(field, K, c2w, height, width, near_far, num_samples)["feature"]
                        for K, c2w in zip(views.K, views.c2w)])
    return point_features_from_views(points, views, maps.permute(0, 3, 1, 2), depth_tolerance)


def _metrics(pred: Tensor, target: Tensor, num_classes: int) -> SegmentationMetrics:
    return compute_metrics(confusion_matrix(pred.reshape(-1), target.reshape(-1), num_classes))


def miou(pred: Tensor, target: Tensor, num_classes: int) -> float:
    """Mean IoU (0..1) over classes present in ``target`` or ``pred``; ``target`` may hold IGNORE_INDEX."""
    return float(_metrics(pred, target, num_classes).miou)


def query_ious(pred: Tensor, target: Tensor, queries: tuple[str, ...]) -> dict[str, float | None]:
    """IoU (0..1) of each query's label (None where neither predicted nor in ``target``)."""
    return _metrics(pred, target, len(queries)).as_dict(list(queries))["iou"]
