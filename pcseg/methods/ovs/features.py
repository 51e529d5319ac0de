"""2D features of posed views and text embeddings of queries, from the ``method`` section's encoder specs.

``image_encoder`` is an :data:`pcseg.models.ENCODERS` spec (``{name: clip_image_encoder, path: …}``,
``{name: LSegImageEncoder, work_dir: …}``, which gets the method's ``text_encoder`` spec so that it
can refuse another text space) or ``{name: SyntheticFeatures, patch, noise, confusion}``: the stand-in
for CLIP on synthetic rooms, built from the views' label maps (a pixel's feature is the text
embedding of its true class name, average-pooled over ``patch x patch`` cells, with a per-view
random fraction ``confusion`` of cells replaced by another class's embedding and Gaussian ``noise``
added: view-inconsistent errors that lifting can average out). It sees the ground truth, so it
measures only what lifting adds to noisy features, not an encoder.

``text_encoder`` is an ``ENCODERS`` spec; CLIP image features need ``CLIPTextEncoder`` and vice versa.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from pcseg.data.formats.posed_views import PosedViews
from pcseg.models import build_encoder
from pcseg.models.encoders import TextEncoder
from pcseg.utils.errors import InputError

__all__ = ["SYNTHETIC_FEATURES", "check_encoder_pair", "build_text_encoder", "synthetic_features", "encode_views"]

SYNTHETIC_FEATURES = "SyntheticFeatures"
_SYNTHETIC_KEYS = {"patch": 8, "noise": 0.3, "confusion": 0.3}


def check_encoder_pair(image_encoder: Mapping[str, Any], text_encoder: Mapping[str, Any]) -> None:
    """Raise InputError unless both or neither are CLIP (only CLIP's towers share a space)."""
    image_clip, text_clip = image_encoder.get("name") == "clip_image_encoder", text_encoder.get("name") == "CLIPTextEncoder"
    if image_clip != text_clip:
        raise InputError(f"method.image_encoder: {image_encoder.get('name')!r} and method.text_encoder "
                         f"{text_encoder.get('name')!r} do not share an embedding space; CLIP image features need "
                         "CLIPTextEncoder and vice versa")


def build_text_encoder(spec: Mapping[str, Any]) -> TextEncoder:
    """The ``ENCODERS`` text encoder of ``spec``."""
    return build_encoder(dict(spec))


def synthetic_features(labels: Tensor, class_embeddings: Tensor, seed: int, patch: int = 8, noise: float = 0.3,
                       confusion: float = 0.3) -> Tensor:
    """Stand-in CLIP features from label maps (V, H, W) int64 and class embeddings (C, D) →
    (V, D, H/patch, W/patch) float32 (see the module docstring); ignored pixels contribute nothing."""
    g = torch.Generator().manual_seed(seed)
    valid = labels >= 0
    onehot = F.one_hot(labels.clamp(min=0), len(class_embeddings)).float() * valid[..., None]
    dense = (onehot @ class_embeddings).permute(0, 3, 1, 2)
    cells = F.avg_pool2d(dense, patch)
    v, d, h, w = cells.shape
    wrong = torch.rand(v, 1, h, w, generator=g) < confusion
    random_class = class_embeddings[torch.randint(len(class_embeddings), (v, h, w), generator=g)].permute(0, 3, 1, 2)
    cells = torch.where(wrong, random_class, cells)
    return cells + noise * torch.randn(cells.shape, generator=g) / d ** 0.5


def encode_views(views: PosedViews, class_names: tuple[str, ...], image_encoder: Mapping[str, Any],
                 text_encoder: Mapping[str, Any], seed: int, dino_encoder: Mapping[str, Any] | None = None
                 ) -> tuple[Tensor, Tensor | None]:
    """2D feature maps (V, C, h, w) float32 of the views and DINO maps (V, C', h', w') or None.

    ``seed`` drives the synthetic stand-in's noise only; ``class_names`` name its label ids.
    """
    check_encoder_pair(image_encoder, text_encoder)
    images = views.images.permute(0, 3, 1, 2)
    spec = dict(image_encoder)
    if spec.get("name") == SYNTHETIC_FEATURES:
        unknown = sorted(set(spec) - {"name", *_SYNTHETIC_KEYS})
        if unknown:
            raise InputError(f"method.image_encoder.{unknown[0]}: unknown for {SYNTHETIC_FEATURES}; accepted: "
                             f"{', '.join(_SYNTHETIC_KEYS)}")
        if views.labels is None or not class_names:
            raise InputError(f"method.image_encoder: {SYNTHETIC_FEATURES} needs label maps and class names "
                             "(data.name SyntheticRoom)")
        class_embeddings = build_text_encoder(text_encoder)(list(class_names))
        settings = {k: spec.get(k, v) for k, v in _SYNTHETIC_KEYS.items()}
        features = synthetic_features(views.labels, class_embeddings, seed, **settings)
    else:
        if spec.get("name") == "LSegImageEncoder":
            spec["text_encoder"] = dict(text_encoder)
        features = build_encoder(spec)(images)
    dino = build_encoder(dict(dino_encoder))(images) if dino_encoder else None
    return features, dino
