"""Fitting the feature field through the one trainer: ray batches as data, a method plug-in for the losses.

The trainer's batch contract fits ray batches: :class:`RayBatches` is a dataset whose item ``i`` of
epoch ``e`` is ``batch_rays`` random pixels of one random fitted view, drawn from ``(seed, e, i)``
alone (so a resumed fit sees the batches an uninterrupted one would), with their rays
(:mod:`pcseg.data.projection`), colours and 2D feature targets. :class:`FeatureField`
(``method: {name: FeatureField}``) turns a batch into

``photometric + feature_weight * distillation + correlation_weight * DINO correlation``

(the feature terms when feature maps are given; they do not move the geometry, see
:func:`~pcseg.methods.ovs.render.render_rays`), with the stratified sample depths drawn from
``step_generator(seed, step)``. The trainer then gives the fit AMP, gradient clipping, logs
(``train.log``, ``log.jsonl``, TensorBoard), atomic checkpoints and ``--resume``.

What does not fit :func:`pcseg.engine.build.build_trainer`: the model (a
:class:`~pcseg.methods.ovs.field.RadianceField`) needs the scene's box and the encoder's feature
width, known only once the scene is read and encoded, and its score is not a confusion matrix over
a validation loader but text-query labels of held-out views and points after fitting. So
:func:`fit_field` builds the trainer's objects itself (with the engine's optimiser, scheduler and
loader builders) and ``eval.period`` must be 0; :mod:`.evaluate` scores the fitted field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pcseg.data.formats.posed_views import PosedViews
from pcseg.data.projection import generate_rays, pixel_coords
from pcseg.engine.build import build_optimizer, build_scheduler, setup_runtime
from pcseg.engine.config import Config, thaw
from pcseg.engine.distributed import wrap_model
from pcseg.engine.hooks import MethodHooks, TrainState
from pcseg.engine.loader import make_loader
from pcseg.engine.trainer import Trainer
from pcseg.methods.common import step_generator
from pcseg.methods.registry import METHODS
from pcseg.utils.errors import InputError

from .field import RadianceField
from .losses import correlation_loss, distillation_loss, multiscale_patch_features, photometric_loss, sample_feature_map
from .render import render_rays, stratified_samples
from .scene import OVSScene

__all__ = ["RayBatches", "single_batch", "FeatureField", "build_field", "fit_field", "render_view"]


class RayBatches(torch.utils.data.Dataset):
    """Random ray batches of posed views (see the module docstring).

    Args:
        views: the fitted views (images (V, H, W, 3) in [0, 1], K, c2w).
        near_far: sample depth range (m), passed on in every batch.
        features: (V, C, h, w) 2D features to distil, or None; ``scales``: the patch sizes of
            :func:`~pcseg.methods.ovs.losses.multiscale_patch_features`.
        dino: (V, C', h', w') features whose correlations the first ``correlation_pixels`` rays follow, or None.
        batch_rays: rays per item; steps_per_epoch: items per epoch; seed: the draws' seed.

    An item: ``origins``, ``dirs`` (R, 3) float32, ``rgb`` (R, 3), ``near``/``far`` floats, and
    ``features`` (R, len(scales), C) / ``dino`` (n, C') when given.
    """

    def __init__(self, views: PosedViews, near_far: tuple[float, float], *, features: Tensor | None = None,
                 dino: Tensor | None = None, scales: Sequence[int] = (1, 3, 5), batch_rays: int = 1024,
                 steps_per_epoch: int = 500, correlation_pixels: int = 256, seed: int = 0) -> None:
        num_views = len(views.images)
        if views.images.dim() != 4 or views.images.shape[-1] != 3:
            raise InputError(f"RayBatches: images expected (V, H, W, 3), got {tuple(views.images.shape)}")
        for name, m in (("features", features), ("dino", dino)):
            if m is not None and (m.dim() != 4 or len(m) != num_views):
                raise InputError(f"RayBatches: {name} expected ({num_views}, C, h, w), got {tuple(m.shape)}")
        if batch_rays < 1 or steps_per_epoch < 1:
            raise InputError(f"data.kwargs: batch_rays and steps_per_epoch expected >= 1, got {batch_rays}, "
                             f"{steps_per_epoch}")
        self.views, self.near_far, self.dino = views, (float(near_far[0]), float(near_far[1])), dino
        self.targets = None if features is None else multiscale_patch_features(features, tuple(scales))
        self.batch_rays, self.steps_per_epoch = batch_rays, steps_per_epoch
        self.correlation_pixels, self.seed, self.epoch = correlation_pixels, seed, 0
        self.size = tuple(views.images.shape[1:3])
        self.uv = pixel_coords(*self.size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
        g = torch.Generator().manual_seed(int(state >> 1))
        height, width = self.size
        view = int(torch.randint(len(self.views.images), (1,), generator=g))
        pix = torch.randint(height * width, (self.batch_rays,), generator=g)
        uv = self.uv[pix]
        origins, dirs = generate_rays(self.views.K[view], self.views.c2w[view], uv)
        item: dict[str, Any] = {"origins": origins, "dirs": dirs, "rgb": self.views.images[view].reshape(-1, 3)[pix],
                                "near": self.near_far[0], "far": self.near_far[1]}
        if self.targets is not None:
            item["features"] = torch.stack([sample_feature_map(self.targets[view, k], uv, self.size)
                                            for k in range(self.targets.shape[1])], 1)
        if self.dino is not None:
            n = min(self.correlation_pixels, len(uv))
            item["dino"] = sample_feature_map(self.dino[view], uv[:n], self.size)
        return item


def single_batch(items: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The collate function of :class:`RayBatches` (``data.batch_size: 1``: an item is a batch)."""
    if len(items) != 1:
        raise InputError(f"data.batch_size: expected 1 for ray batches (data.kwargs.batch_rays sets the rays per "
                         f"step), got {len(items)}")
    return items[0]


@METHODS.register
class FeatureField(MethodHooks):
    """Photometric + feature distillation + DINO correlation losses of a ray batch (module docstring).

    Encoders and queries (used before and after fitting, see :mod:`.features` and :mod:`.evaluate`):
    ``image_encoder``, ``text_encoder``, ``dino_encoder`` (``ENCODERS`` specs or null),
    ``queries`` (default: the scene's class names), ``query_classes`` (``[query, class]`` pairs
    for queries that are no class name), relevancy ``temperature``.
    Fitting: ``num_samples`` depths per ray, ``lr_grid`` (the grids' learning rate; the networks
    take ``train.lr``), ``feature_weight``, ``correlation_weight``, ``correlation_pixels``,
    ``scales``, ``background`` grey.
    """

    def __init__(self, image_encoder: Mapping[str, Any], text_encoder: Mapping[str, Any],
                 dino_encoder: Mapping[str, Any] | None = None, queries: Sequence[str] = (),
                 query_classes: Sequence[Sequence[str]] = (), temperature: float = 0.1, num_samples: int = 64,
                 lr_grid: float = 0.02, feature_weight: float = 1.0, correlation_weight: float = 0.1,
                 correlation_pixels: int = 256, scales: Sequence[int] = (1, 3, 5), background: float = 1.0) -> None:
        if num_samples < 2 or lr_grid <= 0 or temperature <= 0:
            raise InputError(f"method: expected num_samples >= 2, lr_grid > 0, temperature > 0; got {num_samples}, "
                             f"{lr_grid}, {temperature}")
        bad = [p for p in query_classes if len(p) != 2]
        if bad:
            raise InputError(f"method.query_classes: expected [query, class name] pairs, got {list(bad[0])}")
        self.image_encoder, self.text_encoder = thaw(image_encoder), thaw(text_encoder)
        self.dino_encoder = thaw(dino_encoder) if dino_encoder else None
        self.queries, self.temperature = tuple(queries), temperature
        self.query_classes = tuple((str(q), str(c)) for q, c in query_classes)
        self.num_samples, self.lr_grid, self.background = num_samples, lr_grid, background
        self.feature_weight, self.correlation_weight = feature_weight, correlation_weight
        self.correlation_pixels, self.scales = correlation_pixels, tuple(scales)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        named = list(model.named_parameters())
        return [{"params": [p for n, p in named if "_grid." in n], "lr": self.lr_grid},
                {"params": [p for n, p in named if "_grid." not in n]}]

    def losses(self, model: nn.Module, batch: Mapping[str, Any], state: TrainState) -> dict[str, Tensor]:
        origins, dirs = batch["origins"], batch["dirs"]
        t = stratified_samples(len(origins), batch["near"], batch["far"], self.num_samples, perturb=True,
                               generator=step_generator(self.seed, state.step)).to(origins.device)
        out = render_rays(model, origins, dirs, t, background=self.background)
        losses = {"photometric": photometric_loss(out["rgb"].float(), batch["rgb"])}
        if "features" in batch and self.feature_weight:
            losses["distillation"] = self.feature_weight * distillation_loss(out["feature"].float(), batch["features"])
        if "dino" in batch and self.correlation_weight:
            n = len(batch["dino"])
            losses["correlation"] = self.correlation_weight * correlation_loss(out["feature"][:n].float(), batch["dino"])
        return losses


def build_field(scene: OVSScene, feature_dim: int, spec: Mapping[str, Any], seed: int) -> RadianceField:
    """``model: {name: RadianceField, resolution, …}`` over the scene's box with ``feature_dim`` channels."""
    spec = dict(spec)
    if spec.pop("name", None) != "RadianceField":
        raise InputError(f"model.name: expected 'RadianceField' for 3D-OVS, got {dict(spec).get('name')!r}")
    accepted = ("resolution", "density_rank", "appearance_rank", "feature_rank", "appearance_dim", "hidden",
                "density_shift")
    unknown = sorted(set(spec) - set(accepted))
    if unknown:
        raise InputError(f"model.{unknown[0]}: unknown for RadianceField; accepted: {', '.join(accepted)}")
    return RadianceField(scene.aabb, feature_dim=feature_dim, seed=seed, **spec)


def fit_field(cfg: Config, scene: OVSScene, method: FeatureField, features: Tensor, dino: Tensor | None,
              work_dir: str | Path, resume: bool = False) -> RadianceField:
    """Fit a field to ``scene.train`` (and the 2D ``features`` (V, C, h, w) / ``dino`` of its views)
    with the one trainer in ``work_dir``; returns the fitted field (on ``cfg.device``, eval mode).

    ``data.kwargs.batch_rays`` / ``steps_per_epoch``, ``train`` (optimiser, lr, epochs, amp, …)
    and ``seed`` come from ``cfg``. Raises InputError for ``data.batch_size`` other than 1 or
    ``eval.period`` other than 0."""
    if cfg.data.batch_size != 1:
        raise InputError(f"data.batch_size: expected 1 for ray batches (data.kwargs.batch_rays sets the rays per "
                         f"step), got {cfg.data.batch_size}")
    if cfg.eval.period:
        raise InputError(f"eval.period: expected 0 (the fitted field is scored on held-out views and points after "
                         f"training, not by a validation loader), got {cfg.eval.period}")
    runtime = setup_runtime(cfg)
    dataset = RayBatches(scene.train, scene.near_far, features=features, dino=dino, scales=method.scales,
                         batch_rays=int(cfg.data.kwargs.get("batch_rays", 1024)),
                         steps_per_epoch=int(cfg.data.kwargs.get("steps_per_epoch", 500)),
                         correlation_pixels=method.correlation_pixels, seed=cfg.seed)
    loader = make_loader(dataset, batch_size=1, collate_fn=single_batch, train=True, seed=cfg.seed, dist=runtime.dist,
                         num_workers=cfg.data.num_workers)
    field = build_field(scene, features.shape[1], cfg.model, cfg.seed).to(runtime.device)
    method.set_seed(cfg.seed + runtime.dist.rank)
    optimizer = build_optimizer(method.param_groups(field), cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.train.epochs * len(loader))
    trainer = Trainer(wrap_model(field, runtime.dist, runtime.device), method, optimizer, scheduler, loader,
                      max_epochs=cfg.train.epochs, work_dir=work_dir, device=runtime.device, amp=cfg.train.amp,
                      grad_clip=cfg.train.grad_clip, log_period=cfg.train.log_period,
                      checkpoint_period=cfg.train.checkpoint_period, dist=runtime.dist)
    trainer.train(resume=resume)
    return field.eval()


@torch.no_grad()
def render_view(field: RadianceField, K: Tensor, c2w: Tensor, height: int, width: int, near_far: tuple[float, float],
                num_samples: int, background: float = 1.0, chunk: int = 4096) -> dict[str, Tensor]:
    """Render one view (samples at the bin centres): ``rgb`` (H, W, 3), ``feature`` (H, W, D),
    ``depth`` (H, W), ``opacity`` (H, W), float32 on the CPU."""
    device = field.aabb.device
    uv = pixel_coords(height, width)
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, len(uv), chunk):
        origins, dirs = generate_rays(K, c2w, uv[start:start + chunk])
        t = stratified_samples(len(origins), near_far[0], near_far[1], num_samples, perturb=False)
        out = render_rays(field, origins.to(device), dirs.to(device), t.to(device), background=background)
        for key, value in out.items():
            parts.setdefault(key, []).append(value.float().cpu())
    return {k: torch.cat(v).reshape(height, width, *v[0].shape[1:]) for k, v in parts.items()}
