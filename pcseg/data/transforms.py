"""Augmentations: small callables over one sample dict of numpy arrays.

Every transform is called as ``t(sample, rng) -> sample`` with a seeded ``np.random.Generator``
(the dataset derives one per (seed, epoch, index)); none touches numpy's global RNG. A transform
returns a new dict and never writes into the arrays it was given.

Per-point arrays (whichever of :data:`POINT_KEYS` are present) are kept aligned:
``coord`` (N, D) float32 with D = 3 (points) or 2 (pixels), ``color`` (N, 3) float32 in [0, 255]
until :class:`NormalizeColor`, ``strength`` (N, 1) float32, ``segment`` (N,) int64,
``instance`` (N,) int64, ``budget_mask`` (N,) bool (point is labelled in the sparse budget).
Point-dropping transforms index all of them together; :class:`RandomDropout` never drops a point
whose ``budget_mask`` is set.

Build a pipeline from config with :func:`build_transforms`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.ndimage import map_coordinates, uniform_filter1d

from pcseg.utils.registry import UnknownNameError, build_from_config

__all__ = [
    "POINT_KEYS", "Sample", "Transform", "num_points", "take_points", "Compose", "build_transforms",
    "RandomRotateZ", "RandomScale", "RandomFlip", "Jitter", "ElasticDistortion",
    "ChromaticAutoContrast", "ChromaticTranslation", "ChromaticJitter", "NormalizeColor",
    "CropPoints", "RandomDropout", "TRANSFORMS",
]

POINT_KEYS: tuple[str, ...] = ("coord", "color", "strength", "segment", "instance", "budget_mask")
Sample = dict[str, Any]
Transform = Callable[[Sample, np.random.Generator], Sample]


def num_points(sample: Mapping[str, Any]) -> int:
    """N, the number of points; raises if the per-point arrays disagree."""
    if "coord" not in sample:
        raise KeyError(f"sample {sample.get('name', '?')!r} has no 'coord'; keys: {sorted(sample)}")
    n = len(sample["coord"])
    for key in POINT_KEYS:
        if key in sample and len(sample[key]) != n:
            raise ValueError(f"sample {sample.get('name', '?')!r}: '{key}' has {len(sample[key])} rows, "
                             f"expected {n} (rows of 'coord')")
    return n


def take_points(sample: Sample, index: np.ndarray) -> Sample:
    """A copy of ``sample`` keeping the points ``index`` ((K,) int64 or (N,) bool) in every per-point array."""
    out = dict(sample)
    for key in POINT_KEYS:
        if key in sample:
            out[key] = sample[key][index]
    return out


def _with(sample: Sample, **arrays: np.ndarray) -> Sample:
    out = dict(sample)
    out.update(arrays)
    return out


def _color(sample: Sample, who: str) -> np.ndarray:
    if "color" not in sample:
        raise KeyError(f"{who}: sample {sample.get('name', '?')!r} has no 'color'; keys: {sorted(sample)}")
    return np.asarray(sample["color"], dtype=np.float32)


def _check_range(who: str, field: str, bounds: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(b) for b in bounds)
    if lo > hi:
        raise ValueError(f"{who}.{field}: expected (low, high) with low <= high, got {tuple(bounds)}")
    return lo, hi


def _check_probability(who: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{who}.p: expected a probability in [0, 1], got {p}")
    return float(p)


class Compose:
    """Apply transforms in order, passing each the same generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomRotateZ:
    """Rotate ``coord`` about the origin's z axis by a uniform angle, after an optional small tilt.

    angle: (low, high) radians for the z rotation. tilt: the x and y rotations are each uniform in
    [-tilt, tilt] radians (D=3 only). The applied matrix is ``Rz @ Ry @ Rx``: ``coord @ (Rz Ry Rx).T``.
    For D=2 the rotation is the 2×2 block of Rz.
    """

    def __init__(self, angle: Sequence[float] = (-np.pi, np.pi), tilt: float = 0.0) -> None:
        self.angle = _check_range("RandomRotateZ", "angle", angle)
        if tilt < 0:
            raise ValueError(f"RandomRotateZ.tilt: expected >= 0 radians, got {tilt}")
        self.tilt = float(tilt)

    def matrix(self, rng: np.random.Generator, dim: int) -> np.ndarray:
        """Draw the (D, D) float64 rotation matrix."""
        theta = rng.uniform(*self.angle)
        c, s = np.cos(theta), np.sin(theta)
        rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        if dim == 2:
            if self.tilt:
                raise ValueError(f"RandomRotateZ.tilt: needs D=3 coords, got D=2 (tilt={self.tilt})")
            return rz[:2, :2]
        if dim != 3:
            raise ValueError(f"RandomRotateZ: expected coord with D=2 or 3 columns, got {dim}")
        if not self.tilt:
            return rz
        tilt_x, tilt_y = rng.uniform(-self.tilt, self.tilt, 2)
        cx, sx, cy, sy = np.cos(tilt_x), np.sin(tilt_x), np.cos(tilt_y), np.sin(tilt_y)
        rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
        ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
        return rz @ ry @ rx

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        coord = sample["coord"]
        rot = self.matrix(rng, coord.shape[1])
        return _with(sample, coord=(coord @ rot.T).astype(np.float32))


class RandomScale:
    """Multiply ``coord`` by a uniform factor in ``scale`` (one per axis if ``anisotropic``)."""

    def __init__(self, scale: Sequence[float] = (0.9, 1.1), anisotropic: bool = False) -> None:
        self.scale = _check_range("RandomScale", "scale", scale)
        self.anisotropic = anisotropic

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        coord = sample["coord"]
        factor = rng.uniform(*self.scale, size=coord.shape[1] if self.anisotropic else 1)
        return _with(sample, coord=(coord * factor).astype(np.float32))


class RandomFlip:
    """Negate each coordinate axis in ``axes`` independently with probability ``p``."""

    def __init__(self, p: float = 0.5, axes: Sequence[int] = (0, 1)) -> None:
        self.p = _check_probability("RandomFlip", p)
        self.axes = tuple(int(a) for a in axes)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        coord = sample["coord"]
        sign = np.ones(coord.shape[1], dtype=np.float32)
        for axis, u in zip(self.axes, rng.random(len(self.axes))):
            if u < self.p:
                sign[axis] = -1.0
        return _with(sample, coord=coord * sign)


class Jitter:
    """Add gaussian noise of std ``sigma`` to ``coord``, clipped to [-clip, clip] (coord units)."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05) -> None:
        if sigma < 0 or clip < 0:
            raise ValueError(f"Jitter: expected sigma >= 0 and clip >= 0, got sigma={sigma}, clip={clip}")
        self.sigma, self.clip = float(sigma), float(clip)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        coord = sample["coord"]
        noise = np.clip(self.sigma * rng.standard_normal(coord.shape), -self.clip, self.clip)
        return _with(sample, coord=(coord + noise).astype(np.float32))


class ElasticDistortion:
    """Smooth random displacement field at several granularities (coord units).

    For each ``(granularity, magnitude)`` in ``params``: draw gaussian noise (D channels) on a
    grid of spacing ``granularity`` that covers the points with one spare node on each side, blur
    it twice with a 3-node box filter along every axis, interpolate it (D-linearly) at the points
    and add ``magnitude`` times the result to ``coord``.
    """

    def __init__(self, params: Sequence[Sequence[float]] = ((0.2, 0.4), (0.8, 1.6))) -> None:
        self.params = [(float(g), float(m)) for g, m in params]
        for g, _ in self.params:
            if g <= 0:
                raise ValueError(f"ElasticDistortion.params: granularity must be > 0, got {g}")

    @staticmethod
    def displacement(coord: np.ndarray, granularity: float, rng: np.random.Generator) -> np.ndarray:
        """(N, D) float32 smoothed-noise displacement (unit magnitude) at ``coord`` (N, D)."""
        lo = coord.min(axis=0)
        grid_pos = (coord - lo) / granularity + 1.0  # node i sits at lo + (i - 1) * granularity
        shape = np.floor((coord.max(axis=0) - lo) / granularity).astype(np.int64) + 3
        dim = coord.shape[1]
        noise = rng.standard_normal((dim, *shape)).astype(np.float32)
        for _ in range(2):
            for axis in range(1, dim + 1):
                noise = uniform_filter1d(noise, size=3, axis=axis, mode="constant")
        return np.stack([map_coordinates(noise[c], grid_pos.T, order=1, mode="nearest")
                         for c in range(dim)], axis=1)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        coord = np.asarray(sample["coord"], dtype=np.float32)
        if len(coord) == 0:
            return sample
        out = coord.copy()
        for granularity, magnitude in self.params:
            out += magnitude * self.displacement(coord, granularity, rng)
        return _with(sample, coord=out)


class ChromaticAutoContrast:
    """With probability ``p``, blend ``color`` with its per-channel min-max stretch to [0, 255].

    blend_factor: weight of the stretched colours; None draws it uniformly in [0, 1).
    """

    def __init__(self, p: float = 0.2, blend_factor: float | None = None) -> None:
        self.p = _check_probability("ChromaticAutoContrast", p)
        self.blend_factor = blend_factor

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        color = _color(sample, "ChromaticAutoContrast")
        if rng.random() >= self.p or len(color) == 0:
            return sample
        lo, hi = color.min(axis=0), color.max(axis=0)
        stretched = (color - lo) * (255.0 / np.maximum(hi - lo, 1e-6))
        blend = rng.random() if self.blend_factor is None else self.blend_factor
        return _with(sample, color=((1 - blend) * color + blend * stretched).astype(np.float32))


class ChromaticTranslation:
    """With probability ``p``, shift all colours by one RGB offset uniform in ±ratio·255, clip to [0, 255]."""

    def __init__(self, p: float = 0.95, ratio: float = 0.05) -> None:
        self.p = _check_probability("ChromaticTranslation", p)
        self.ratio = float(ratio)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        color = _color(sample, "ChromaticTranslation")
        if rng.random() >= self.p:
            return sample
        offset = (rng.random(3) - 0.5) * 2.0 * self.ratio * 255.0
        return _with(sample, color=np.clip(color + offset, 0, 255).astype(np.float32))


class ChromaticJitter:
    """With probability ``p``, add per-point gaussian noise of std ``std``·255 to colours, clip to [0, 255]."""

    def __init__(self, p: float = 0.95, std: float = 0.005) -> None:
        self.p = _check_probability("ChromaticJitter", p)
        self.std = float(std)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        color = _color(sample, "ChromaticJitter")
        if rng.random() >= self.p:
            return sample
        noise = rng.standard_normal(color.shape) * self.std * 255.0
        return _with(sample, color=np.clip(color + noise, 0, 255).astype(np.float32))


class NormalizeColor:
    """Map ``color`` linearly from [0, 255] to [low, high] (default [-1, 1]; use low=0 for [0, 1])."""

    def __init__(self, low: float = -1.0, high: float = 1.0) -> None:
        self.low, self.high = _check_range("NormalizeColor", "low/high", (low, high))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        color = _color(sample, "NormalizeColor")
        return _with(sample, color=(color * ((self.high - self.low) / 255.0) + self.low).astype(np.float32))


class CropPoints:
    """Keep at most ``max_points``: those nearest a uniformly chosen point (original order kept)."""

    def __init__(self, max_points: int) -> None:
        if max_points < 1:
            raise ValueError(f"CropPoints.max_points: expected >= 1, got {max_points}")
        self.max_points = int(max_points)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        n = num_points(sample)
        if n <= self.max_points:
            return sample
        coord = sample["coord"]
        centre = coord[rng.integers(n)]
        dist2 = np.square(coord - centre).sum(axis=1)
        keep = np.sort(np.argpartition(dist2, self.max_points - 1)[: self.max_points])
        return take_points(sample, keep)


class RandomDropout:
    """With probability ``p``, drop ``int(N * ratio)`` uniformly chosen points.

    keep_budget: never drop a point whose ``budget_mask`` is True (fewer points are dropped when
    not enough unlabelled ones exist). Under full supervision every labelled point is in the
    budget, so set ``keep_budget=False`` there to drop labelled points too.
    """

    def __init__(self, ratio: float = 0.2, p: float = 0.5, keep_budget: bool = True) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"RandomDropout.ratio: expected a fraction in [0, 1), got {ratio}")
        self.ratio = float(ratio)
        self.p = _check_probability("RandomDropout", p)
        self.keep_budget = keep_budget

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        n = num_points(sample)
        if rng.random() >= self.p:
            return sample
        if self.keep_budget and "budget_mask" in sample:
            candidates = np.flatnonzero(~np.asarray(sample["budget_mask"], dtype=bool))
        else:
            candidates = np.arange(n)
        drop = rng.choice(candidates, size=min(int(n * self.ratio), len(candidates)), replace=False)
        keep = np.ones(n, dtype=bool)
        keep[drop] = False
        return take_points(sample, keep)


TRANSFORMS: dict[str, type] = {cls.__name__: cls for cls in (
    RandomRotateZ, RandomScale, RandomFlip, Jitter, ElasticDistortion, ChromaticAutoContrast,
    ChromaticTranslation, ChromaticJitter, NormalizeColor, CropPoints, RandomDropout,
)}


def build_transforms(cfgs: Sequence[Mapping[str, Any]]) -> Compose:
    """``[{"name": "RandomRotateZ", "tilt": 0.05}, ...]`` → :class:`Compose`.

    Names are the class names in :data:`TRANSFORMS`; an unknown name or key raises, naming the
    list position.
    """
    transforms = []
    for i, cfg in enumerate(cfgs):
        try:
            transforms.append(build_from_config("transform", TRANSFORMS, cfg))
        except UnknownNameError as e:
            raise UnknownNameError(f"transforms[{i}]: {e}") from None
        except (TypeError, ValueError) as e:
            raise type(e)(f"transforms[{i}]: {e}") from None
    return Compose(transforms)
