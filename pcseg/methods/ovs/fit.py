"""Fit a :class:`~pcseg.methods.ovs.field.RadianceField` to posed images and 2D feature maps.

This is its own optimisation loop over rays, not segmentation-network training, so it does not go
through the one trainer (:mod:`pcseg.engine.trainer`) and is not a registered method. Each step
takes ``batch_rays`` random pixels of one random view and minimises

``photometric + feature_weight * distillation + correlation_weight * DINO correlation``

(the feature terms only when feature maps are given; they do not move the geometry, see
:func:`~pcseg.methods.ovs.render.render_rays`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from .field import RadianceField
from .losses import correlation_loss, distillation_loss, multiscale_patch_features, photometric_loss, sample_feature_map
from .rays import generate_rays, pixel_coords, stratified_samples
from .render import render_rays

__all__ = ["FitConfig", "fit_field", "render_view"]


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings; ``near``/``far`` bound the samples' z-depth in metres."""

    iterations: int = 2000
    batch_rays: int = 1024
    num_samples: int = 64
    near: float = 0.1
    far: float = 10.0
    lr_grid: float = 0.02
    lr_net: float = 1e-3
    feature_weight: float = 1.0
    correlation_weight: float = 0.1
    correlation_pixels: int = 256
    scales: tuple[int, ...] = (1, 3, 5)
    background: float = 1.0
    seed: int = 0


def _optimizer(field: RadianceField, cfg: FitConfig) -> torch.optim.Optimizer:
    named = list(field.named_parameters())
    grids = [p for n, p in named if "_grid." in n]
    nets = [p for n, p in named if "_grid." not in n]
    return torch.optim.Adam([{"params": grids, "lr": cfg.lr_grid}, {"params": nets, "lr": cfg.lr_net}],
                            betas=(0.9, 0.99))


def _check_views(images: Tensor, K: Tensor, c2w: Tensor, maps: dict[str, Tensor | None]) -> None:
    v = len(images)
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"fit_field: images expected (V, H, W, 3), got {tuple(images.shape)}")
    if K.shape != (v, 3, 3) or c2w.shape != (v, 4, 4):
        raise ValueError(f"fit_field: expected K ({v}, 3, 3) and c2w ({v}, 4, 4), "
                         f"got {tuple(K.shape)} and {tuple(c2w.shape)}")
    for name, m in maps.items():
        if m is not None and (m.dim() != 4 or len(m) != v):
            raise ValueError(f"fit_field: {name} expected ({v}, C, h, w), got {tuple(m.shape)}")


def fit_field(field: RadianceField, images: Tensor, K: Tensor, c2w: Tensor, cfg: FitConfig, *,
              features: Tensor | None = None, dino: Tensor | None = None,
              progress: bool = False) -> list[dict[str, float]]:
    """Optimise ``field`` in place.

    Args:
        images: (V, H, W, 3) float32 RGB in [0, 1]; K: (V, 3, 3); c2w: (V, 4, 4) OpenCV camera-to-world.
        features: (V, C, h, w) 2D features to distil (C = ``field.feature_dim``), or None.
        dino: (V, C', h', w') features whose pixel correlations the rendered features follow, or None.
        progress: show a progress bar.

    Returns:
        per-step loss values (``total`` and each term).
    """
    _check_views(images, K, c2w, {"features": features, "dino": dino})
    if features is not None and features.shape[1] != field.feature_dim:
        raise ValueError(f"fit_field: features have {features.shape[1]} channels, field.feature_dim "
                         f"{field.feature_dim}")
    num_views, height, width, _ = images.shape
    g = torch.Generator().manual_seed(cfg.seed)
    targets = None if features is None else multiscale_patch_features(features, cfg.scales)
    uv_all = pixel_coords(height, width)
    optim = _optimizer(field, cfg)
    history = []
    for _ in tqdm(range(cfg.iterations), desc="fit field", disable=not progress):
        view = int(torch.randint(num_views, (1,), generator=g))
        pix = torch.randint(height * width, (cfg.batch_rays,), generator=g)
        uv = uv_all[pix]
        origins, dirs = generate_rays(K[view], c2w[view], uv)
        t = stratified_samples(len(uv), cfg.near, cfg.far, cfg.num_samples, perturb=True, generator=g)
        out = render_rays(field, origins, dirs, t, background=cfg.background)
        losses = {"photometric": photometric_loss(out["rgb"], images[view].reshape(-1, 3)[pix])}
        if targets is not None:
            per_scale = [sample_feature_map(targets[view, k], uv, (height, width)) for k in range(len(cfg.scales))]
            losses["distillation"] = cfg.feature_weight * distillation_loss(out["feature"], torch.stack(per_scale, 1))
        if dino is not None:
            n = min(cfg.correlation_pixels, len(uv))
            reference = sample_feature_map(dino[view], uv[:n], (height, width))
            losses["correlation"] = cfg.correlation_weight * correlation_loss(out["feature"][:n], reference)
        total = sum(losses.values())
        optim.zero_grad(set_to_none=True)
        total.backward()
        optim.step()
        history.append({"total": total.item(), **{k: v.item() for k, v in losses.items()}})
    return history


@torch.no_grad()
def render_view(field: RadianceField, K: Tensor, c2w: Tensor, height: int, width: int, cfg: FitConfig,
                chunk: int = 4096) -> dict[str, Tensor]:
    """Render one view: ``rgb`` (H, W, 3), ``feature`` (H, W, D), ``depth`` (H, W), ``opacity`` (H, W)."""
    uv = pixel_coords(height, width)
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, len(uv), chunk):
        origins, dirs = generate_rays(K, c2w, uv[start:start + chunk])
        t = stratified_samples(len(origins), cfg.near, cfg.far, cfg.num_samples, perturb=False)
        for key, value in render_rays(field, origins, dirs, t, background=cfg.background).items():
            parts.setdefault(key, []).append(value)
    return {k: torch.cat(v).reshape(height, width, *v[0].shape[1:]) for k, v in parts.items()}
