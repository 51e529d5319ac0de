"""Volume rendering (emission-absorption quadrature, as in NeRF) in pure torch.

For samples ``i = 1..S`` along a ray with densities ``sigma_i`` (1/m) and spacings ``delta_i`` (m):
``alpha_i = 1 - exp(-sigma_i delta_i)``, transmittance ``T_i = prod_{j<i} (1 - alpha_j)``, weight
``w_i = T_i alpha_i``; a rendered quantity is ``sum_i w_i v_i``. Rays follow
:mod:`pcseg.data.projection` (directions with camera-z 1, so sample depths are z-depths).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["stratified_samples", "sample_deltas", "render_weights", "composite", "render_rays"]

_LAST_DELTA = 1e10  # the last sample extends to infinity: whatever is left is absorbed there


def stratified_samples(num_rays: int, near: float, far: float, num_samples: int, *, perturb: bool,
                       generator: torch.Generator | None = None) -> Tensor:
    """(R, S) float32 sample depths in ``[near, far]``: one per equal bin, uniform inside it when
    ``perturb`` (training), at the bin centre otherwise (evaluation). Increasing along each ray."""
    if not 0 <= near < far:
        raise ValueError(f"stratified_samples: expected 0 <= near < far, got near={near}, far={far}")
    edges = torch.linspace(near, far, num_samples + 1)
    lo, width = edges[:-1], edges[1:] - edges[:-1]
    if perturb:
        offset = torch.rand(num_rays, num_samples, generator=generator)
    else:
        offset = torch.full((num_rays, num_samples), 0.5)
    return lo + width * offset


def sample_deltas(t: Tensor, dir_norm: Tensor) -> Tensor:
    """(R, S) metric spacings from sample depths ``t`` (R, S) along rays whose directions have
    length ``dir_norm`` (R,); the last spacing is effectively infinite."""
    gaps = t[:, 1:] - t[:, :-1]
    gaps = torch.cat([gaps, torch.full_like(t[:, :1], _LAST_DELTA)], dim=1)
    return gaps * dir_norm[:, None]


def render_weights(sigma: Tensor, delta: Tensor) -> Tensor:
    """(R, S) weights ``T_i alpha_i`` from densities ``sigma`` (R, S) >= 0 and spacings ``delta`` (R, S)."""
    if sigma.shape != delta.shape:
        raise ValueError(f"render_weights: sigma {tuple(sigma.shape)} and delta {tuple(delta.shape)} differ")
    tau = sigma * delta
    alpha = 1.0 - torch.exp(-tau)
    transmittance = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], 1), dim=1))
    return transmittance * alpha


def composite(weights: Tensor, values: Tensor, background: Tensor | float | None = None) -> Tensor:
    """Expected value per ray: ``weights`` (R, S), ``values`` (R, S, C) or (R, S) → (R, C) or (R,).

    ``background`` (C,) or scalar fills the remaining transmittance ``1 - sum_i w_i`` (e.g. a white
    background for colours); ``None`` leaves it empty (features, depth).
    """
    squeeze = values.dim() == 2
    v = values[..., None] if squeeze else values
    out = (weights[..., None] * v).sum(dim=1)
    if background is not None:
        out = out + (1.0 - weights.sum(dim=1, keepdim=True)) * torch.as_tensor(background, dtype=out.dtype)
    return out[:, 0] if squeeze else out


def render_rays(query: Callable[[Tensor], dict[str, Tensor]], origins: Tensor, dirs: Tensor, t: Tensor, *,
                background: float = 1.0, detach_feature_weights: bool = True) -> dict[str, Tensor]:
    """Render rays through a field.

    Args:
        query: points (P, 3) → ``{"sigma": (P,), "rgb": (P, 3), "feature": (P, D)}`` (a
            :class:`~pcseg.methods.ovs.field.RadianceField`).
        origins, dirs: (R, 3) rays (see :mod:`pcseg.methods.ovs.rays`); t: (R, S) sample depths.
        background: grey level behind the scene for colours.
        detach_feature_weights: composite features with weights that pass no gradient, so feature
            losses never move the geometry (3D-OVS distils into an already reconstructed field).

    Returns:
        ``rgb`` (R, 3), ``feature`` (R, D), ``depth`` (R,) expected z-depth, ``opacity`` (R,) sum of weights.
    """
    num_rays, num_samples = t.shape
    points = origins[:, None, :] + t[..., None] * dirs[:, None, :]
    out = query(points.reshape(-1, 3))
    sigma = out["sigma"].view(num_rays, num_samples)
    weights = render_weights(sigma, sample_deltas(t, dirs.norm(dim=1)))
    feature_weights = weights.detach() if detach_feature_weights else weights
    return {
        "rgb": composite(weights, out["rgb"].view(num_rays, num_samples, 3), background),
        "feature": composite(feature_weights, out["feature"].view(num_rays, num_samples, -1)),
        "depth": composite(weights, t),
        "opacity": weights.sum(dim=1),
    }
