"""End-to-end 3D-OVS steps shared by ``tools/ovs.py`` and ``benchmarks/ovs_lifting.py``.

Load posed views (+ a point cloud when the source has one), encode 2D features, fit the field,
then label held-out views (rendered features) and points (field features at the points) by text
relevancy. The per-view 2D baselines (:func:`labels_from_feature_maps`,
:func:`point_features_from_views`) use the same relevancy on unlifted features.

The ``synthetic`` image encoder stands in for CLIP on synthetic rooms: a pixel's feature is the
text embedding of its true class name, average-pooled over ``patch x patch`` cells (CLIP's coarse
patches), with a per-view random fraction ``confusion`` of cells replaced by another class's
embedding and Gaussian ``noise`` added (view-inconsistent errors that lifting can average out).

The ``lseg`` image encoder (:mod:`.lseg`) is a small network trained once, on synthetic rooms of
other seeds, to map pixels into the text encoder's space from their 2D labels; with the
sentence_transformer text encoder, free-text queries that are not class names (``couch``) work.
For evaluation, ``OVSConfig.query_classes`` names the class such a query stands for.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pcseg.data.formats import IGNORE_INDEX
from pcseg.data.synthetic.indoor import INDOOR_CLASSES, generate_room
from pcseg.engine.metrics import SegmentationMetrics, compute_metrics, confusion_matrix

from .encoders import (CLIPTextEncoder, HashTextEncoder, SentenceTransformerTextEncoder, TextEncoder,
                       clip_image_encoder, dino_image_encoder)
from .field import RadianceField
from .fit import FitConfig, fit_field, render_view
from .losses import relevancy
from .lseg import LSegImageEncoder, LSegSettings, TextSpace, load_or_train_lseg
from .multiview import (PosedViews, read_3dovs_scene, read_scannet_frames, read_transforms_json, room_cameras,
                        splat_views)
from .rays import generate_rays, project

__all__ = ["DataSection", "FeatureSection", "FieldSection", "OVSConfig", "OVSScene", "load_scene",
           "build_text_encoder", "lseg_settings", "lseg_image_encoder", "encode_views", "synthetic_features",
           "build_field", "to_query_labels", "fit_scene", "labels_from_feature_maps", "render_labels",
           "label_points", "point_features_from_views", "miou", "query_ious"]


@dataclass(frozen=True)
class DataSection:
    """Where views come from. ``synthetic_room``: a generated room splatted from ``num_views``
    cameras; ``3dovs``: a 3D-OVS scene folder ``root``; ``transforms_json``: the file ``root``;
    ``scannet_frames``: a ScanNet scene's exported frames under ``root``
    (:func:`~pcseg.methods.ovs.multiview.read_scannet_frames`: every ``frame_skip``-th frame, resized
    to ``image_size`` (H, W) or, when null, the depth size; label pngs read as
    ScanNet raw ids through ``label_map``: the ``scannetv2-labels.combined.tsv`` path, ``nyu40`` (NYU40 ids), or empty to
    find the tsv beside the scene).
    The last ``held_out`` views are never fitted (synthetic: extra cameras; scannet_frames: the last
    ``held_out`` frames; 3dovs / transforms_json: the annotated views, else the last ``held_out``)."""

    source: Literal["synthetic_room", "3dovs", "transforms_json", "scannet_frames"] = "synthetic_room"
    root: str = ""
    frame_skip: int = 1
    image_size: tuple[int, int] | None = None
    label_map: str = ""
    seed: int = 0
    num_points: int = 60_000
    num_views: int = 24
    held_out: int = 4
    height: int = 48
    width: int = 64
    fov_deg: float = 75.0


@dataclass(frozen=True)
class FeatureSection:
    """2D encoders: ``image_encoder`` synthetic (see module docstring), clip (``clip_path``) or
    lseg (:mod:`.lseg`: trained on ``lseg_rooms`` synthetic rooms of seeds 1000+, ``lseg_views``
    views each, for ``lseg_epochs`` epochs, at the size and field of view of the encoded views,
    cached in ``lseg_checkpoint``; a checkpoint trained with other settings or another text
    encoder raises :class:`~pcseg.methods.ovs.lseg.LSegMismatchError` — delete it or choose
    another path to retrain); optional DINO (``dino_path``) for the correlation loss;
    ``text_encoder`` hash (random vectors), sentence_transformer (optional extra) — both only with
    the synthetic or lseg image encoders — or clip (the text tower of ``clip_path`` with CLIP's BPE
    merges file ``clip_merges``)."""

    image_encoder: Literal["synthetic", "clip", "lseg"] = "synthetic"
    clip_path: str = ""
    clip_activation: Literal["quick_gelu", "gelu"] = "quick_gelu"
    dino_path: str = ""
    text_encoder: Literal["hash", "sentence_transformer", "clip"] = "hash"
    clip_merges: str = ""
    text_dim: int = 64
    patch: int = 8
    noise: float = 0.3
    confusion: float = 0.3
    temperature: float = 0.1
    lseg_checkpoint: str = "work_dirs/ovs/lseg.pt"
    lseg_rooms: int = 24
    lseg_views: int = 16
    lseg_epochs: int = 20


@dataclass(frozen=True)
class FieldSection:
    """:class:`RadianceField` shape; its feature width follows the image encoder."""

    resolution: int = 64
    density_rank: int = 8
    appearance_rank: int = 16
    feature_rank: int = 16
    appearance_dim: int = 27
    hidden: int = 64
    density_shift: float = -5.0
    padding: float = 0.1


@dataclass(frozen=True)
class OVSConfig:
    """A ``configs/ovs/*.yaml`` file (loaded with ``load_config(path, schema=OVSConfig)``).

    ``query_classes``: ``[query, class name]`` pairs for queries that are not class names of the
    scene (synonyms such as ``[couch, sofa]``), so that their ground truth is known; pairs whose
    query is not asked are ignored (see :func:`to_query_labels`)."""

    data: DataSection = dataclasses.field(default_factory=DataSection)
    features: FeatureSection = dataclasses.field(default_factory=FeatureSection)
    field: FieldSection = dataclasses.field(default_factory=FieldSection)
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    queries: tuple[str, ...] = ()
    query_classes: tuple[tuple[str, str], ...] = ()
    seed: int = 0
    work_dir: str = ""


@dataclass
class OVSScene:
    """Views split into fitted (``train``) and ``held_out``; ``points`` (N, 3) with ``point_classes``
    (N,) indices into ``class_names`` when the source has a point cloud; ``aabb`` (2, 3); ``near_far``."""

    train: PosedViews
    held_out: PosedViews
    class_names: tuple[str, ...]
    aabb: Tensor
    near_far: tuple[float, float]
    points: Tensor | None = None
    point_classes: Tensor | None = None


def _frustum_bounds(views: PosedViews, near: float, far: float) -> Tensor:
    height, width = views.images.shape[1:3]
    corners = torch.tensor([[0.0, 0.0], [width - 1.0, 0.0], [0.0, height - 1.0], [width - 1.0, height - 1.0]])
    pts = []
    for K, c2w in zip(views.K, views.c2w):
        o, d = generate_rays(K, c2w, corners)
        pts += [o + near * d, o + far * d]
    pts = torch.cat(pts)
    return torch.stack([pts.min(0).values, pts.max(0).values])


def load_scene(cfg: DataSection, padding: float = 0.1) -> OVSScene:
    """Read or generate the views described by ``cfg``."""
    if cfg.source == "synthetic_room":
        room = generate_room(cfg.seed, num_points=cfg.num_points)
        K, c2w = room_cameras(room.coord, cfg.num_views + cfg.held_out, cfg.height, cfg.width, cfg.fov_deg, cfg.seed)
        views = splat_views(room.coord, room.color, room.semantic, K, c2w, cfg.height, cfg.width)
        points = torch.as_tensor(room.coord, dtype=torch.float32)
        lo, hi = points.min(0).values - padding, points.max(0).values + padding
        return OVSScene(views.subset(list(range(cfg.num_views))),
                        views.subset(list(range(cfg.num_views, len(K)))), tuple(c.name for c in INDOOR_CLASSES),
                        torch.stack([lo, hi]), (0.05, float((hi - lo).norm())), points,
                        torch.as_tensor(room.semantic, dtype=torch.long))
    if not cfg.root:
        raise ValueError(f"data.root: required for source {cfg.source!r}")
    if cfg.source == "scannet_frames":
        views = read_scannet_frames(cfg.root, cfg.frame_skip, cfg.image_size, cfg.label_map or None)
        if not 0 <= cfg.held_out < len(views.names):
            raise ValueError(f"data.held_out: expected 0 <= held_out < {len(views.names)} (the frames read from "
                             f"{cfg.root} with frame_skip {cfg.frame_skip}), got {cfg.held_out}")
        annotated = []
    else:
        views = read_3dovs_scene(cfg.root) if cfg.source == "3dovs" else read_transforms_json(cfg.root)
        annotated = [] if views.labels is None else [i for i in range(len(views.names)) if (views.labels[i] >= 0).any()]
    held = annotated or list(range(len(views.names) - cfg.held_out, len(views.names)))
    train = [i for i in range(len(views.names)) if i not in held]
    near, far = views.near_far or (0.1, 10.0)
    return OVSScene(views.subset(train), views.subset(held), views.class_names or (), _frustum_bounds(views, near, far),
                    (near, far))


def build_text_encoder(cfg: FeatureSection, seed: int = 0) -> TextEncoder:
    """The configured text encoder (``hash`` needs nothing installed).

    With the lseg image encoder, trained once for all seeds, the hash vectors use seed 0 whatever
    ``seed``; they carry no meaning, so only queries that are exact class names of
    ``INDOOR_CLASSES`` are meaningful then. sentence_transformer is lseg's intended pairing:
    queries near a class name in its space (``couch`` ≈ ``sofa``) find that class."""
    if (cfg.image_encoder == "clip") != (cfg.text_encoder == "clip"):
        raise ValueError(f"features: image_encoder {cfg.image_encoder!r} and text_encoder {cfg.text_encoder!r} do not "
                         "share an embedding space; CLIP image features need text_encoder 'clip' and vice versa")
    if cfg.text_encoder == "clip":
        return CLIPTextEncoder(cfg.clip_path, cfg.clip_merges, cfg.clip_activation)
    if cfg.text_encoder == "sentence_transformer":
        return SentenceTransformerTextEncoder()
    return HashTextEncoder(cfg.text_dim, 0 if cfg.image_encoder == "lseg" else seed)


def lseg_settings(cfg: FeatureSection, views: PosedViews) -> LSegSettings:
    """Training settings of the lseg encoder for views like ``views``: their size and (from
    ``K``) horizontal field of view, rounded to 1e-4 degrees; the rest from ``cfg`` and defaults."""
    height, width = views.images.shape[1:3]
    fov_deg = round(math.degrees(2 * math.atan(0.5 * width / float(views.K[0, 0, 0]))), 4)
    return LSegSettings(rooms=cfg.lseg_rooms, views_per_room=cfg.lseg_views, epochs=cfg.lseg_epochs,
                        height=height, width=width, fov_deg=fov_deg)


def lseg_image_encoder(cfg: FeatureSection, views: PosedViews, text_encoder: TextEncoder | None = None,
                       progress: bool = False) -> LSegImageEncoder:
    """The lseg encoder for views like ``views``, loaded from ``cfg.lseg_checkpoint`` or trained
    (and saved there) against the embeddings of the ``INDOOR_CLASSES`` names by ``text_encoder``
    (default: :func:`build_text_encoder`)."""
    text_encoder = text_encoder or build_text_encoder(cfg)
    names = tuple(c.name for c in INDOOR_CLASSES)
    encoder_name = f"hash(dim={cfg.text_dim})" if cfg.text_encoder == "hash" else cfg.text_encoder
    space = TextSpace(encoder_name, names, text_encoder(list(names)))
    return load_or_train_lseg(cfg.lseg_checkpoint, lseg_settings(cfg, views), space, progress)


def synthetic_features(labels: Tensor, class_embeddings: Tensor, cfg: FeatureSection, seed: int) -> Tensor:
    """Stand-in CLIP features from label maps (V, H, W) and class embeddings (C, D) → (V, D, H/p, W/p)
    (see the module docstring); ignored pixels contribute nothing to their cell."""
    g = torch.Generator().manual_seed(seed)
    valid = labels >= 0
    onehot = F.one_hot(labels.clamp(min=0), len(class_embeddings)).float() * valid[..., None]
    dense = (onehot @ class_embeddings).permute(0, 3, 1, 2)
    cells = F.avg_pool2d(dense, cfg.patch)
    v, d, h, w = cells.shape
    wrong = torch.rand(v, 1, h, w, generator=g) < cfg.confusion
    random_class = class_embeddings[torch.randint(len(class_embeddings), (v, h, w), generator=g)].permute(0, 3, 1, 2)
    cells = torch.where(wrong, random_class, cells)
    return cells + cfg.noise * torch.randn(cells.shape, generator=g) / d ** 0.5


def encode_views(views: PosedViews, class_embeddings: Tensor | None, cfg: FeatureSection, seed: int,
                 text_encoder: TextEncoder | None = None, progress: bool = False) -> tuple[Tensor, Tensor | None]:
    """2D feature maps (V, C, h, w) of the views and DINO maps (V, C', h', w') or None;
    ``class_embeddings`` (C, D) feed the synthetic encoder only; ``text_encoder`` (default: built
    from ``cfg``) and ``progress`` serve lseg training when its checkpoint does not exist yet."""
    images = views.images.permute(0, 3, 1, 2)
    if cfg.image_encoder == "synthetic":
        if views.labels is None or class_embeddings is None:
            raise ValueError("features.image_encoder: 'synthetic' needs label maps and class names "
                             "(data.source synthetic_room)")
        features = synthetic_features(views.labels, class_embeddings, cfg, seed)
    elif cfg.image_encoder == "lseg":
        features = lseg_image_encoder(cfg, views, text_encoder, progress)(images)
    else:
        features = clip_image_encoder(cfg.clip_path, cfg.clip_activation)(images)
    dino = dino_image_encoder(cfg.dino_path)(images) if cfg.dino_path else None
    return features, dino


def build_field(scene: OVSScene, feature_dim: int, cfg: FieldSection, seed: int) -> RadianceField:
    return RadianceField(scene.aabb, cfg.resolution, cfg.density_rank, cfg.appearance_rank, cfg.feature_rank,
                         cfg.appearance_dim, feature_dim, cfg.hidden, cfg.density_shift, seed)


def to_query_labels(labels: Tensor, class_names: tuple[str, ...], queries: tuple[str, ...],
                    query_classes: tuple[tuple[str, str], ...] = ()) -> Tensor:
    """Ground-truth class ids (any shape) → query indices; classes not queried become ``IGNORE_INDEX``.

    A query stands for the class of the same name, or for the class ``query_classes`` pairs it
    with (``("couch", "sofa")``); pairs of queries not asked are ignored. When two queries stand
    for one class, the first wins. Raises ValueError for a pair naming an unknown class."""
    aliases = dict(query_classes)
    unknown = [c for q, c in query_classes if q in queries and c not in class_names]
    if unknown:
        raise ValueError(f"query_classes: {unknown[0]!r} is no class of the scene; known: {', '.join(class_names)}")
    targets = [aliases.get(q, q) for q in queries]
    mapping = torch.tensor([targets.index(c) if c in targets else IGNORE_INDEX for c in class_names] + [IGNORE_INDEX],
                           dtype=torch.long)
    return mapping[torch.where(labels >= 0, labels, torch.full_like(labels, len(class_names)))]


def fit_scene(scene: OVSScene, features: Tensor, dino: Tensor | None, cfg: OVSConfig,
              progress: bool = False) -> tuple[RadianceField, FitConfig]:
    """Build and fit the field on the scene's fitted views; sample depths span the scene's near/far
    (they replace ``cfg.fit.near``/``far``). Returns the field and the fit settings used."""
    fit_cfg = replace(cfg.fit, near=scene.near_far[0], far=scene.near_far[1], seed=cfg.seed)
    field_ = build_field(scene, features.shape[1], cfg.field, cfg.seed)
    fit_field(field_, scene.train.images, scene.train.K, scene.train.c2w, fit_cfg, features=features, dino=dino,
              progress=progress)
    return field_, fit_cfg


def labels_from_feature_maps(features: Tensor, text: Tensor, height: int, width: int, temperature: float) -> Tensor:
    """Per-view 2D baseline: feature maps (V, C, h, w) upsampled to (H, W) → labels (V, H, W)."""
    up = F.interpolate(features, size=(height, width), mode="bilinear", align_corners=False)
    return relevancy(up.permute(0, 2, 3, 1), text, temperature)[1]


def render_labels(field_: RadianceField, views: PosedViews, text: Tensor, fit_cfg: FitConfig,
                  temperature: float) -> tuple[Tensor, Tensor]:
    """Rendered RGB (V, H, W, 3) and relevancy labels (V, H, W) of the views."""
    height, width = views.images.shape[1:3]
    rgb, labels = [], []
    for K, c2w in zip(views.K, views.c2w):
        out = render_view(field_, K, c2w, height, width, fit_cfg)
        rgb.append(out["rgb"])
        labels.append(relevancy(out["feature"], text, temperature)[1])
    return torch.stack(rgb), torch.stack(labels)


@torch.no_grad()
def label_points(field_: RadianceField, points: Tensor, text: Tensor, temperature: float, chunk: int = 65536) -> Tensor:
    """(N,) labels of points (N, 3) from the field's feature at each point."""
    feats = torch.cat([field_(points[i:i + chunk])["feature"] for i in range(0, len(points), chunk)])
    return relevancy(feats, text, temperature)[1]


def point_features_from_views(points: Tensor, views: PosedViews, features: Tensor,
                              depth_tolerance: float = 0.05) -> tuple[Tensor, Tensor]:
    """Per-view 2D baseline for points: the mean of the 2D features (V, C, h, w) of the views in
    which each point (N, 3) is visible (inside the image and, when ``views.depth`` is known, within
    ``depth_tolerance`` m of the z-buffer) → (N, C), zero for points no view sees; and the number
    of views seeing each point (N,) int64."""
    height, width = views.images.shape[1:3]
    total, count = torch.zeros(len(points), features.shape[1]), torch.zeros(len(points), 1)
    for v in range(len(views.names)):
        uv, z = project(points, views.K[v], views.c2w[v])
        px = torch.round(uv).long()
        seen = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < width) & (px[:, 1] >= 0) & (px[:, 1] < height)
        if views.depth is not None:
            zbuf = views.depth[v][px[:, 1].clamp(0, height - 1), px[:, 0].clamp(0, width - 1)]
            seen &= (z - zbuf).abs() <= depth_tolerance
        grid = torch.stack([(uv[:, 0] + 0.5) / width * 2 - 1, (uv[:, 1] + 0.5) / height * 2 - 1], 1)
        sampled = F.grid_sample(features[v:v + 1], grid.view(1, -1, 1, 2), align_corners=False)[0, :, :, 0].T
        total += sampled * seen[:, None]
        count += seen[:, None]
    return total / count.clamp(min=1), count[:, 0].long()


def _metrics(pred: Tensor, target: Tensor, num_classes: int) -> SegmentationMetrics:
    return compute_metrics(confusion_matrix(pred.reshape(-1), target.reshape(-1), num_classes))


def miou(pred: Tensor, target: Tensor, num_classes: int) -> float:
    """Mean IoU (0..1) over classes present in ``target`` or ``pred``; ``target`` may hold IGNORE_INDEX."""
    return float(_metrics(pred, target, num_classes).miou)


def query_ious(pred: Tensor, target: Tensor, queries: tuple[str, ...]) -> dict[str, float | None]:
    """IoU (0..1) of each query's label (None where neither predicted nor in ``target``)."""
    return _metrics(pred, target, len(queries)).as_dict(list(queries))["iou"]
